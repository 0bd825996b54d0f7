"""Session-wide test settings."""
import os
import tempfile

# Text embeddings go to a test cache (shared by the xdist workers; the cache is safe under
# concurrent writers), never into the user's cache folder.
os.environ.setdefault("CAUSALREC_CACHE_DIR", os.path.join(tempfile.gettempdir(), "causalrec-test-cache"))
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import torch  # noqa: E402

# CI runs two pytest workers on two cores. The batched fits are many small matrix products:
# torch's intra-op threads would only spin against the other worker (measured 5-20x slower).
# Notebook kernels and CLI subprocesses inherit OMP_NUM_THREADS.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)
