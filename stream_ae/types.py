"""Type aliases shared by every module (one home, so no module defines its own copy)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]
Bool = npt.NDArray[np.bool_]

#: message headers as a source delivers them
Headers = tuple[tuple[str, bytes], ...]
#: a topic partition: (topic, partition)
TopicPartition = tuple[str, int]
