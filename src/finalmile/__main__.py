from finalmile.cli import main

main()
