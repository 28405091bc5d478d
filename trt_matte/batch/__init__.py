"""Many files at once: ``trt-matte batch`` on one machine (``local``) from a plan made
before any model loads (``plan``)."""
