"""Build the optional C part of cachecloak (proxy/_native.c); everything else is in
pyproject.toml.

The extension needs a C compiler and OpenSSL's headers (Debian: gcc, libssl-dev).  It is
optional: without them the install still succeeds and the proxy runs its pure-Python
twins of the same functions, slower, and says so at startup.
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "proxy._native",
            ["proxy/_native.c"],
            libraries=["crypto"],
            # OpenSSL 3 marks SHA256_Init & co deprecated; they remain the cheapest way to
            # copy a prepared HMAC state (a plain struct) per stored name.
            extra_compile_args=["-O2", "-Wno-deprecated-declarations"],
            optional=True,
        )
    ]
)
