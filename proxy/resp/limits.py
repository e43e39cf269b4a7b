"""Limits on what a client may send, with the precedents they follow.

They bound the memory one client can make the proxy hold before a command is complete.
"""

# Redis: proto-max-bulk-len, 512 MB.  A request larger than one bulk of that size plus
# its framing is refused before it is parsed to the end.
MAX_REQUEST_BYTES = 512 * 1024 * 1024 + 64 * 1024

# Redis: proto-max-bulk-len.  A bulk header declaring more is refused as soon as it
# arrives ("invalid bulk length"), without waiting for that much data.
MAX_BULK_BYTES = 512 * 1024 * 1024

# Redis: PROTO_INLINE_MAX_SIZE, 64 KiB ("too big inline request").
MAX_INLINE_BYTES = 64 * 1024

# Redis refuses multibulk counts above INT_MAX; 1M arguments is far above any real cache
# command and keeps a hostile `*2000000000` header from reserving a huge list.
MAX_ARGUMENTS = 1024 * 1024
