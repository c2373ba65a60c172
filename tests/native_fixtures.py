"""Native parameter files edited the way the format description says, independently of ``lds.native``.

- :func:`seal` and :func:`reseal` write the 512-byte header (magic, format version, length
  and SHA-256 of the HDF5 part), as a program editing a file would.
- :func:`downgrade_to_format_2` turns a file of the current format into the format-2
  layout, whose string attributes were variable-length (h5py's ``str``), so they live in
  the HDF5 global heap (``version=3`` makes a crafted file: that layout claiming format 3).
- :func:`global_heap_span` finds the one global heap collection of a file image.
- :func:`array_digest` is the SHA-256 the format records for a float64 array.
- :func:`break_global_heap` damages a global heap the way that makes libhdf5 2.0.0 loop
  forever (a free-space object of size 0).
- :func:`assert_fixed_length_only` checks that a file holds no variable-length type and
  no global heap.
"""

import hashlib
import struct

import h5py
import numpy as np

MAGIC = b"\x89LFADS-TOOLS\r\n\x1a\n"
HEADER = struct.Struct("<16sIQ32s")


def seal(body: bytes, version: int) -> bytes:
    """A header claiming ``version`` with the right length and SHA-256, followed by ``body`` (an HDF5 image)."""
    return HEADER.pack(MAGIC, version, len(body), hashlib.sha256(body).digest()).ljust(512, b"\0") + body


def reseal(path, version=None):
    """Recompute the header after editing a file; keep its format version unless ``version`` is given."""
    data = path.read_bytes()
    if version is None:
        version = HEADER.unpack_from(data)[1]
    path.write_bytes(seal(data[512:], version))


def downgrade_to_format_2(path, version=2):
    """Rewrite every string attribute variable-length and say format ``version``, header resealed."""
    with h5py.File(path, "r+") as f:
        for obj in [f] + _all_objects(f):
            for name in list(obj.attrs):
                value = obj.attrs[name]
                if isinstance(value, bytes):
                    del obj.attrs[name]
                    obj.attrs[name] = value.decode("utf-8")  # h5py stores str variable-length
        f.attrs["format_version"] = version
    reseal(path, version)
    assert b"GCOL" in path.read_bytes()


def array_digest(values) -> str:
    """The ``sha256`` attribute of a float64 array: SHA-256 of ``b"<f8;<shape>;"`` and its bytes."""
    array = np.asarray(values, "<f8")
    return hashlib.sha256(f"<f8;{','.join(map(str, array.shape))};".encode() + array.tobytes()).hexdigest()


def global_heap_span(image: bytes) -> tuple[int, int]:
    """``(start, end)`` of the image's one global heap collection (``GCOL``, version, 3 reserved bytes, 8-byte size)."""
    at = image.find(b"GCOL")
    assert at > 0 and image.count(b"GCOL") == 1
    return at, at + int.from_bytes(image[at + 8:at + 16], "little")


def break_global_heap(image: bytes) -> bytes:
    """Shrink the global heap's free-space object by 16 bytes: they read as a free-space object of size 0.

    A collection (see :func:`global_heap_span`) is a run of objects, each a 16-byte
    header (index, reference count, reserved, 8-byte size) and its data padded to 8
    bytes; the free-space object (index 0) counts its own header. libhdf5 2.0.0 steps
    from object to object by those sizes, so a size of 0 never moves on.
    """
    at, end = global_heap_span(image)
    p = at + 16
    while True:
        index, size = int.from_bytes(image[p:p + 2], "little"), int.from_bytes(image[p + 8:p + 16], "little")
        if index == 0:
            break
        p += 16 + -(-size // 8) * 8
    assert p + size == end and image[p + 16:end] == bytes(end - p - 16)  # free space: zeros up to the end
    return image[:p + 8] + (size - 16).to_bytes(8, "little") + image[p + 16:]


def _all_objects(f):
    found = []
    f.visititems(lambda name, obj: found.append(obj))
    return found


def _is_variable_length(type_id) -> bool:
    if type_id.get_class() == h5py.h5t.STRING:
        return type_id.is_variable_str()
    return type_id.detect_class(h5py.h5t.VLEN)


def assert_fixed_length_only(path):
    """Every attribute and dataset of the file has a fixed-length type, and there is no global heap."""
    with h5py.File(path, "r") as f:
        for obj in [f] + _all_objects(f):
            for name in obj.attrs:
                attr_type = h5py.h5a.open(obj.id, name.encode()).get_type()
                assert not _is_variable_length(attr_type), f"attribute {name} of {obj.name} is variable-length"
            if isinstance(obj, h5py.Dataset):
                assert not _is_variable_length(obj.id.get_type()), f"dataset {obj.name} is variable-length"
    assert b"GCOL" not in path.read_bytes()
