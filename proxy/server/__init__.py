"""The client-facing side: connections, reply ordering, listeners, process lifecycle."""
