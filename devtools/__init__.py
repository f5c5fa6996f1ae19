"""Development tools, not part of the product: the local stack launcher (``make run``, the
end-to-end tests and the benchmarks start the same processes through it) and the demo."""
