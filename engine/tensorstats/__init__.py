"""Tensor summaries, piece by piece: what ``steplog.engine.summary`` computes, split by
what each part does.

    fields      what a summary holds, the kernels' constants (no numba)
    validate    the one check of tensors, bins and histogram edges (no numba)
    prepare     a tensor's memory as the kernels read it: layout, bit views (no numba)
    access      element loads: any dtype to float64, chunks of finite values
    scan        pass 1 on the raw bits: finite and NaN counts, min, max
    moments     mean, M2, sum of squares, zeros of a chunk; the rescaled pass
    histogram   output bins, derived edges, the adaptive fine window
    table       output bins read off fine bins, for large tensors
    quantiles   quantiles from the fine histogram
    segment     one tensor from start to end, and the kernel over many

The numba modules are imported only by ``steplog.engine.summary`` (the entry points),
so importing this package, ``fields`` or ``validate`` does not import numba.
"""
