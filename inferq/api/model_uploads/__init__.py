"""Model uploads over HTTP: spooled to disk, sniffed for pickles, validated in a limited child, registered."""

from inferq.api.model_uploads.child import ChildLimits
from inferq.api.model_uploads.service import ModelUploads, UploadMetadata

__all__ = ["ChildLimits", "ModelUploads", "UploadMetadata"]
