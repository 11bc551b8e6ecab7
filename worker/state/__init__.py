"""All state in Redis: the key scheme, the Lua scripts that change it atomically, the server
clock."""
