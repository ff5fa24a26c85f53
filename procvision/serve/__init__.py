"""`procvision serve`: the visual memory as an HTTP service with a web explorer.

`state` holds every access to the memory on disk (snapshots, reloads, locked writes, recipe),
`images` checks uploads and renders thumbnails of registered sources, `batching` micro-batches
concurrent classify requests, `jobs` runs privacy audits in the background, and `app` is the
FastAPI app (`create_app(MemoryState(...), ServeConfig(...))`).
"""

from procvision.serve.app import ServeConfig, create_app
from procvision.serve.images import UploadLimits
from procvision.serve.state import MemoryState

__all__ = ["MemoryState", "ServeConfig", "UploadLimits", "create_app"]
