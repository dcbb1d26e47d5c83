# Included from _core.pyx: the decoder side of Model (window-mode reconstruction).


cdef cnp.ndarray _masked_windows(Model model, x, mask):
    """x as C-contiguous float32 (B, C, L) with the masked samples zeroed.

    Masked samples are set to 0 before the encoder, exactly as masked patches
    are in pretraining; mask is bool, shaped like x or (L,) for every channel.
    A NaN or Inf sample is lost data: it is masked too.
    """
    cdef cnp.ndarray xb = model._windows(x)
    finite = np.isfinite(xb)
    if mask is None and finite.all():
        return xb
    m = np.zeros(np.shape(x), bool) if mask is None else np.asarray(mask)
    if m.dtype != np.bool_:
        raise ValueError(f"mask must be boolean (True = masked sample), got {m.dtype}")
    if m.shape != np.shape(x) and m.shape != (model.config["window"],):
        raise ValueError(
            f"mask shape {m.shape} does not match x shape {np.shape(x)} (or ({model.config['window']},))"
        )
    return np.ascontiguousarray(np.where(m | ~finite, np.float32(0), xb), dtype=np.float32)


cdef object _reconstruct(Model model, x, mask):
    cdef cnp.ndarray xb = _masked_windows(model, x, mask)
    cdef size_t batch = xb.shape[0]
    cdef cnp.ndarray out = np.empty_like(xb)
    cdef char err[HIMAE_ERR_LEN]
    cdef int rc
    cdef const float *xp = <const float *>cnp.PyArray_DATA(xb)
    cdef float *op = <float *>cnp.PyArray_DATA(out)
    err[0] = 0
    with nogil:
        rc = himae_reconstruct(model._m, xp, batch, op, err, sizeof(err))
    if rc != HIMAE_OK:
        _raise(rc, err)
    return out if np.ndim(x) == 3 else out[0]
