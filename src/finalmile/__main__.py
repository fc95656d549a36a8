from finalmile.cli import main

if __name__ == "__main__":  # a spawned child (an isolated upload) imports this module without running the CLI
    main()
