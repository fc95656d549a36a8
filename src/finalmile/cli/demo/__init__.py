"""`finalmile demo`: the whole loop on the embedded defaults — train, register, accelerate, serve, watch, act."""
