"""The Open Inference Protocol (KServe V2) over the same queue path as v1: services without Litestar in them."""
