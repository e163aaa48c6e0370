"""The SQLite store: one file, WAL mode, any number of processes on one host."""
