"""The exported CNN in onnxruntime, without torch: session, and the metadata that makes the
.onnx file self-sufficient (class names, feature parameters, static defaults, temperature).

The encoder node runs on this by default (``backend: onnx``), so its process never imports
torch; muse_encoder.export writes the files.
"""

from dataclasses import dataclass
import json
from pathlib import Path

from muse_encoder.features import FeatureParams

MODELS_DIR = Path(__file__).resolve().parent / 'models'
DEFAULT_CHECKPOINT = MODELS_DIR / 'default.pt'
METADATA_PREFIX = 'muse_encoder.'
REQUIRED_METADATA = ('class_names', 'feature_params', 'static_defaults')


class OnnxModelError(ValueError):
    """An ONNX file is missing, unreadable or lacks the muse_encoder metadata."""


@dataclass(frozen=True)
class OnnxMetadata:
    class_names: tuple
    feature_params: FeatureParams
    static_defaults: dict
    temperature: float
    embedding_dim: int


def open_onnx_session(path, threads=1):
    import onnxruntime
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'ONNX model {path} does not exist (make it with muse_export_encoder)')
    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = int(threads)
    options.inter_op_num_threads = 1
    # One window at a time: the arena would only hold on to memory the node never reuses.
    options.enable_cpu_mem_arena = False
    try:
        return onnxruntime.InferenceSession(str(path), options, providers=['CPUExecutionProvider'])
    except Exception as exc:   # onnxruntime's own exception types derive from Exception only
        raise OnnxModelError(f'{path} is not a loadable ONNX model: {exc}') from exc


def read_metadata(session, path):
    """The muse_encoder metadata of an open session (written by muse_export_encoder)."""
    stored = session.get_modelmeta().custom_metadata_map
    missing = [k for k in REQUIRED_METADATA if METADATA_PREFIX + k not in stored]
    if missing:
        raise OnnxModelError(f'{path} lacks the muse_encoder metadata {missing}; export it with '
                             'muse_export_encoder')
    try:
        value = {k[len(METADATA_PREFIX):]: json.loads(v) for k, v in stored.items()
                 if k.startswith(METADATA_PREFIX)}
        params = dict(value['feature_params'])
        params.setdefault('representation', 'axes')   # files exported before the invariant features
        embedding = [o for o in session.get_outputs() if o.name == 'embedding'][0].shape[-1]
        return OnnxMetadata(tuple(value['class_names']), FeatureParams(**params),
                            {k: float(v) for k, v in value['static_defaults'].items()},
                            float(value.get('temperature', 1.0)), int(embedding))
    except (ValueError, TypeError, KeyError, IndexError) as exc:
        raise OnnxModelError(f'{path}: unreadable muse_encoder metadata ({exc})') from exc
