"""The control path's ROS 2 messages as serialized CDR bytes, read and written with numpy, without ROS.

A node that subscribes with ``raw=True`` gets the middleware's bytes and can publish bytes back. Turning a
``nav_msgs/Odometry`` into rclpy's Python objects costs about 70 µs (115 µs when the process has just woken
up, as an event-driven node always has) and serializing one about 15-117 µs; reading the 13 numbers the
policy needs from the bytes, or writing them into a prepared buffer, costs a few µs. On the bench's 2 cores
this is most of a hop's CPU (measured in ``benchmarks/ros_loop.py``'s notes).

Format (OMG CDR as the ROS 2 middlewares send it, XCDR1): a 4-byte encapsulation header (``00 01 00 00``
for little-endian CDR, the only one handled here; big-endian ``00 00`` is rejected), then the fields in
declaration order, each aligned to its own size counted from the byte after the header; a string is a
``uint32`` length (terminating NUL included) and its bytes. So the doubles of both messages below start
after the two (or one) header strings, at the next multiple of 8:

- ``nav_msgs/Odometry``: ``header`` (``stamp.sec`` int32, ``stamp.nanosec`` uint32, ``frame_id``),
  ``child_frame_id``, then 85 doubles: ``pose.pose.position`` [3], ``pose.pose.orientation`` [4] (x, y, z,
  w), ``pose.covariance`` [36], ``twist.twist.linear`` [3], ``twist.twist.angular`` [3],
  ``twist.covariance`` [36].
- ``geometry_msgs/TwistStamped``: ``header``, then 6 doubles: ``twist.linear`` [3], ``twist.angular`` [3].
- ``std_msgs/Float32MultiArray``: ``layout.dim`` (a ``uint32`` count, then per dimension ``label``, ``size``
  and ``stride`` as ``uint32``), ``layout.data_offset`` (``uint32``), then ``data`` (a ``uint32`` count and the
  float32s); everything 4-byte aligned.

Frames and units are those of :mod:`sim2real.deploy.codecs` (REP 105 odometry: twist in the body frame
unless ``twist_frame="world"``).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence

import numpy as np

from sim2real.deploy.codecs import TWIST_FRAMES, state_to_twist, twist_to_state
from sim2real.deploy.state import RobotState

ENCAPSULATION = b"\x00\x01\x00\x00"
"""Little-endian CDR (``CDR_LE``) with no options."""

HEADER_BYTES = len(ENCAPSULATION)
_LITTLE = ENCAPSULATION[:2]
"""The encapsulation's first two bytes: little-endian CDR (the other two are options)."""
_STRINGS_AT = HEADER_BYTES + 8
"""Where a stamped message's header strings start: after the encapsulation and ``stamp.sec``, ``stamp.nanosec``."""
ODOMETRY_DOUBLES = 85
TWIST_STAMPED_DOUBLES = 6
POSITION, ORIENTATION, LINEAR, ANGULAR = slice(0, 3), slice(3, 7), slice(43, 46), slice(46, 49)
"""Odometry's doubles: ``pose.pose.position``, ``pose.pose.orientation``, ``twist.twist.linear``, ``.angular``."""
POSE_BYTES, TWIST_BYTES = 8 * ORIENTATION.stop, 8 * (ANGULAR.stop - LINEAR.start)
"""Bytes of the pose (position, orientation) and of the twist (linear, angular) in serialized odometry."""
_STAMP, _POSE, _TWIST = struct.Struct("<II"), struct.Struct("<7d"), struct.Struct("<6d")
_TWIST_AT = 8 * LINEAR.start
"""Byte offset of the twist from the first double of serialized odometry."""

SMALL_BURST = 32
"""Bursts of fewer odometry messages are read and written with Python floats, larger ones with numpy calls over
the whole burst. A node woken for a burst finds numpy's code out of the CPU caches, and then each numpy call costs
some 10 us: reading 4 odometries after a 10 ms sleep took 201 us with numpy and 85 us with Python floats (47 and
15 us back to back; local probe, 2 cores). Python's cost grows with the burst and numpy's hardly does."""


class CdrError(ValueError):
    """Bytes that are not the expected message in little-endian CDR."""


def _aligned(offset: int, size: int) -> int:
    """``offset`` (in the buffer, header included) moved up to the next multiple of ``size`` of the payload."""
    return offset + (-(offset - HEADER_BYTES)) % size


def _after_string(data: bytes, offset: int, what: str) -> int:
    """The offset just past the CDR string at ``offset`` (aligned to 4 first)."""
    offset = _aligned(offset, 4)
    if offset + 4 > len(data):
        raise CdrError(f"{what}: the message ends ({len(data)} bytes) before the string at byte {offset}")
    length = int.from_bytes(data[offset : offset + 4], "little")
    end = offset + 4 + length
    if length == 0 or end > len(data) or data[end - 1] != 0:
        raise CdrError(f"{what}: no NUL-terminated string of {length} bytes at byte {offset}")
    return end


def doubles_offset(data: bytes, strings: int, doubles: int, what: str) -> int:
    """Byte offset of the first double of a message with a ``Header``, ``strings - 1`` more strings after it, then
    ``doubles`` float64s; checks the encapsulation and the length."""
    if bytes(data[:2]) != _LITTLE:
        kind = "big-endian CDR" if bytes(data[:2]) == b"\x00\x00" else f"encapsulation {bytes(data[:2]).hex()}"
        raise CdrError(f"{what}: {kind} is not handled; publish little-endian CDR (as ROS 2 on x86 and ARM does)")
    offset = _STRINGS_AT
    for _ in range(strings):
        offset = _after_string(data, offset, what)
    offset = _aligned(offset, 8)
    if offset + 8 * doubles > len(data):
        raise CdrError(f"{what}: {len(data)} bytes is too short for {doubles} doubles from byte {offset}")
    return offset


def read_stamp_ns(data: bytes) -> int:
    """The ``header.stamp`` [ns] of a serialized stamped message."""
    sec = int.from_bytes(data[4:8], "little", signed=True)
    return sec * 1_000_000_000 + int.from_bytes(data[8:12], "little")


def _write_stamp(buf: bytearray, stamp_ns: int) -> None:
    """Set the ``header.stamp`` of serialized message ``buf`` to ``stamp_ns`` (>= 0)."""
    _STAMP.pack_into(buf, HEADER_BYTES, *divmod(int(stamp_ns), 1_000_000_000))


def _header(frame_ids: tuple[str, ...]) -> bytearray:
    """Encapsulation, a zero stamp and the given strings, padded with zeros to the doubles' alignment."""
    buf = bytearray(ENCAPSULATION + bytes(8))
    for text in frame_ids:
        raw = text.encode() + b"\x00"
        buf += bytes(_aligned(len(buf), 4) - len(buf)) + len(raw).to_bytes(4, "little") + raw
    return buf + bytes(_aligned(len(buf), 8) - len(buf))


class StampedBuffer:
    """A serialized stamped message with fixed frame ids; :meth:`payload` sets stamp and doubles, returns bytes."""

    def __init__(self, frame_ids: tuple[str, ...], doubles: int) -> None:
        head = _header(frame_ids)
        self.buf = bytearray(head + bytes(8 * doubles))
        self.doubles = np.frombuffer(self.buf, dtype="<f8", count=doubles, offset=len(head))

    def payload(self, stamp_ns: int) -> bytes:
        """The message's bytes with ``header.stamp = stamp_ns`` (>= 0) and the doubles as set in :attr:`doubles`."""
        _write_stamp(self.buf, stamp_ns)
        return bytes(self.buf)


def read_odometry_cdr(data: bytes, twist_frame: str = "body") -> RobotState:
    """The :class:`RobotState` in a serialized ``nav_msgs/Odometry`` (like ``codecs.read_odometry``)."""
    row = read_odometry_rows([data], [odometry_offset(data)], twist_frame)[0]
    return RobotState(row[POSITION], row[ORIENTATION], row[7:10], row[10:13], read_stamp_ns(data))


def patch_odometry_cdr(data: bytes, state: RobotState, twist_frame: str = "body") -> bytes:
    """A copy of serialized odometry ``data`` with ``state``'s stamp, pose and twist; frame ids and covariances kept."""
    buf = bytearray(write_odometry_rows([data], [odometry_offset(data)], state.row()[None], twist_frame)[0])
    _write_stamp(buf, state.stamp_ns)
    return bytes(buf)


def odometry_offset(data: bytes) -> int:
    """Byte offset of the doubles of serialized ``nav_msgs/Odometry`` ``data``; :class:`CdrError` if it is not one."""
    return doubles_offset(data, 2, ODOMETRY_DOUBLES, "Odometry")


class OdometryOffsets:
    """:func:`odometry_offset` remembered per source (a robot's topic): a message with its source's last message's
    length, encapsulation and header strings has that message's offset, found with two slice comparisons instead
    of parsing the strings again (some twenty Python calls per message, 70 us for a burst of 4 in a node just
    woken; local probe). Other messages are parsed (and checked) as by :func:`odometry_offset`."""

    def __init__(self) -> None:
        self.known: dict[int, tuple[int, int, bytes]] = {}  # source -> (length, offset, the strings' bytes)

    def __call__(self, source: int, data: bytes) -> int:
        """The offset of the doubles of serialized odometry ``data`` from ``source``; :class:`CdrError` if it is
        not odometry."""
        size, offset, strings = self.known.get(source, (-1, 0, b""))
        if len(data) == size and data[_STRINGS_AT:offset] == strings and data[:2] == _LITTLE:
            return offset
        offset = odometry_offset(data)
        self.known[source] = (len(data), offset, bytes(data[_STRINGS_AT:offset]))
        return offset


def read_odometry_rows(messages: Sequence[bytes], offsets: Sequence[int], twist_frame: str = "body") -> np.ndarray:
    """The states of a burst of serialized odometries as rows ``[k, 13]`` (float64, :meth:`RobotState.row`).

    ``offsets`` are the messages' :func:`odometry_offset`. A burst of fewer than :data:`SMALL_BURST` is read with
    Python floats, a larger one in a few numpy calls over the burst.
    """
    body = _is_body(twist_frame)
    if len(messages) < SMALL_BURST:
        rows = []
        for message, offset in zip(messages, offsets, strict=True):
            pose = _POSE.unpack_from(message, offset)
            twist = _TWIST.unpack_from(message, offset + _TWIST_AT)
            linear, angular = twist[:3], twist[3:]
            if body:
                rows.append((*pose, *_rotated(pose[3:], linear, False), *angular))
            else:
                rows.append((*pose, *linear, *_rotated(pose[3:], angular, True)))
        return np.array(rows, dtype=np.float64).reshape(len(rows), 13)
    raw = np.frombuffer(b"".join(m[o : o + 8 * ANGULAR.stop] for m, o in zip(messages, offsets, strict=True)), "<f8")
    raw = raw.reshape(len(messages), ANGULAR.stop)
    velocity, body_rates = twist_to_state(raw[:, ORIENTATION], raw[:, LINEAR], raw[:, ANGULAR], twist_frame)
    return np.concatenate([raw[:, POSITION], raw[:, ORIENTATION], velocity, body_rates], axis=1)


def write_odometry_rows(
    messages: Sequence[bytes],
    offsets: Sequence[int],
    rows: np.ndarray,
    twist_frame: str = "body",
    *,
    normalize: bool = False,
) -> list[bytes]:
    """Copies of serialized odometries with the pose and twist of state rows ``[k, 13]``; the stamps, frame ids
    and covariances kept (the burst form of :func:`patch_odometry_cdr`). ``normalize``: each row's quaternion is
    renormalised first (a zero one is left as is). Python floats below :data:`SMALL_BURST` messages, as in
    :func:`read_odometry_rows`."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.shape != (len(messages), 13):
        raise ValueError(f"state rows of shape {rows.shape} for {len(messages)} robots; expected ({len(messages)}, 13)")
    if len(messages) >= SMALL_BURST:
        poses, twists = _pose_twist_bytes(_unit_quaternions(rows) if normalize else rows, len(messages), twist_frame)
    else:
        body = _is_body(twist_frame)
        poses, twists = [], []
        for row in rows.tolist():
            quat = row[3:7]
            norm = math.sqrt(sum(q * q for q in quat)) if normalize else 0.0
            if norm > 0:
                quat = [q / norm for q in quat]
            poses.append(_POSE.pack(*row[:3], *quat))
            if body:
                twists.append(_TWIST.pack(*_rotated(quat, row[7:10], True), *row[10:13]))
            else:
                twists.append(_TWIST.pack(*row[7:10], *_rotated(quat, row[10:13], False)))
    out = []
    for message, offset, pose, twist in zip(messages, offsets, poses, twists, strict=True):
        buf = bytearray(message)
        buf[offset : offset + POSE_BYTES] = pose
        buf[offset + _TWIST_AT : offset + _TWIST_AT + TWIST_BYTES] = twist
        out.append(bytes(buf))
    return out


def _unit_quaternions(rows: np.ndarray) -> np.ndarray:
    """State rows ``[k, 13]`` (:meth:`RobotState.row`) as float64 with their quaternions renormalised (a zero one
    is left as is)."""
    rows = np.array(rows, dtype=np.float64)
    norm = np.linalg.norm(rows[:, ORIENTATION], axis=1, keepdims=True)
    rows[:, ORIENTATION] /= np.where(norm > 0, norm, 1.0)
    return rows


def _is_body(twist_frame: str) -> bool:
    """Whether odometry twists are in the body frame (else the world frame); ``ValueError`` for another name."""
    if twist_frame not in TWIST_FRAMES:
        raise ValueError(f"twist_frame must be one of {TWIST_FRAMES}, got {twist_frame!r}")
    return twist_frame == "body"


def _rotated(quat: Sequence[float], vector: Sequence[float], inverse: bool) -> tuple[float, float, float]:
    """``R @ vector`` (``R.T @ vector`` when ``inverse``) in Python floats, ``R`` the body-to-world matrix of
    quaternion ``quat`` (x, y, z, w) as :func:`~sim2real.envs.drones.rotations.quat_to_matrix` builds it."""
    x, y, z, w = quat
    a, b, c = vector
    x2, y2, z2 = 2.0 * x, 2.0 * y, 2.0 * z
    xx, yy, zz, xy, xz, yz = x * x2, y * y2, z * z2, x * y2, x * z2, y * z2
    wx, wy, wz = w * x2, w * y2, w * z2
    if inverse:
        return (
            (1.0 - yy - zz) * a + (xy + wz) * b + (xz - wy) * c,
            (xy - wz) * a + (1.0 - xx - zz) * b + (yz + wx) * c,
            (xz + wy) * a + (yz - wx) * b + (1.0 - xx - yy) * c,
        )
    return (
        (1.0 - yy - zz) * a + (xy - wz) * b + (xz + wy) * c,
        (xy + wz) * a + (1.0 - xx - zz) * b + (yz - wx) * c,
        (xz - wy) * a + (yz + wx) * b + (1.0 - xx - yy) * c,
    )


def _pose_twist_bytes(rows: np.ndarray, count: int, twist_frame: str) -> tuple[list[bytes], list[bytes]]:
    """Each of ``count`` state rows ``[count, 13]`` as its odometry's pose and twist doubles (little-endian bytes)."""
    rows = np.asarray(rows, dtype=np.float64)
    if rows.shape != (count, 13):
        raise ValueError(f"state rows of shape {rows.shape} for {count} robots; expected ({count}, 13)")
    linear, angular = state_to_twist(rows[:, 3:7], rows[:, 7:10], rows[:, 10:13], twist_frame)
    pose = np.ascontiguousarray(rows[:, :7], dtype="<f8").tobytes()
    twist = np.ascontiguousarray(np.concatenate([linear, angular], axis=1), dtype="<f8").tobytes()
    poses = [pose[k * POSE_BYTES : (k + 1) * POSE_BYTES] for k in range(count)]
    return poses, [twist[k * TWIST_BYTES : (k + 1) * TWIST_BYTES] for k in range(count)]


class SwarmOdometryWriter:
    """Serialized ``nav_msgs/Odometry`` of a swarm, one message per robot (``frame_id``, the robot's
    ``child_frame_id``, zero covariances), all written in one pass."""

    def __init__(self, frame_id: str, child_frame_ids: Sequence[str], twist_frame: str = "body") -> None:
        self.heads = [bytes(_header((frame_id, child))) for child in child_frame_ids]
        self.twist_frame = twist_frame

    def encode_rows(self, rows: np.ndarray, stamp_ns: int) -> list[bytes]:
        """The robots' state rows ``[N, 13]`` (:meth:`RobotState.row`), all stamped ``stamp_ns`` (>= 0), as bytes."""
        poses, twists = _pose_twist_bytes(rows, len(self.heads), self.twist_frame)
        stamp = _STAMP.pack(*divmod(int(stamp_ns), 1_000_000_000))
        covariance = bytes(8 * 36)
        return [
            b"".join((head[:HEADER_BYTES], stamp, head[HEADER_BYTES + 8 :], pose, covariance, twist, covariance))
            for head, pose, twist in zip(self.heads, poses, twists, strict=True)
        ]


class OdometryWriter:
    """Serialized ``nav_msgs/Odometry`` of one robot (fixed ``frame_id`` and ``child_frame_id``, zero covariances)."""

    def __init__(self, frame_id: str, child_frame_id: str, twist_frame: str = "body") -> None:
        self.swarm = SwarmOdometryWriter(frame_id, [child_frame_id], twist_frame)

    def encode(self, state: RobotState) -> bytes:
        """``state`` (stamped ``state.stamp_ns``) as bytes to publish."""
        return self.swarm.encode_rows(state.row()[None], state.stamp_ns)[0]


class TwistStampedWriter:
    """Serialized ``geometry_msgs/TwistStamped`` velocity commands in one frame (angular rate zero)."""

    def __init__(self, frame_id: str) -> None:
        self.message = StampedBuffer((frame_id,), TWIST_STAMPED_DOUBLES)

    def encode(self, velocity: np.ndarray, stamp_ns: int) -> bytes:
        """A velocity ``[3]`` [m/s], stamped ``stamp_ns``, as bytes to publish."""
        self.message.doubles[:3] = velocity
        return self.message.payload(stamp_ns)


def patch_twist_stamped_cdr(data: bytes, linear: np.ndarray) -> bytes:
    """A copy of serialized ``geometry_msgs/TwistStamped`` ``data`` with ``twist.linear = linear`` ``[3]``; the
    header and ``twist.angular`` kept."""
    buf = bytearray(data)
    offset = doubles_offset(buf, 1, TWIST_STAMPED_DOUBLES, "TwistStamped")
    np.frombuffer(buf, dtype="<f8", count=3, offset=offset)[:] = linear
    return bytes(buf)


def read_twist_stamped_cdr(data: bytes) -> tuple[np.ndarray, np.ndarray, int]:
    """``(linear [3], angular [3], stamp_ns)`` of a serialized ``geometry_msgs/TwistStamped``."""
    offset = doubles_offset(data, 1, TWIST_STAMPED_DOUBLES, "TwistStamped")
    v = np.frombuffer(data, dtype="<f8", count=TWIST_STAMPED_DOUBLES, offset=offset)
    return v[:3].copy(), v[3:].copy(), read_stamp_ns(data)


class Float32ArrayWriter:
    """Serialized ``std_msgs/Float32MultiArray`` of ``size`` values with one dimension labelled ``label`` (motor
    commands: ``m1,m2,m3,m4``), ``data_offset`` 0."""

    def __init__(self, label: str, size: int) -> None:
        raw = label.encode() + b"\x00"
        head = ENCAPSULATION + struct.pack("<II", 1, len(raw)) + raw
        head += bytes(_aligned(len(head), 4) - len(head))
        self.head = head + struct.pack("<IIII", size, size, 0, size)  # size, stride, data_offset, data count
        self.size = size

    def encode(self, values: np.ndarray) -> bytes:
        """``values [size]`` as float32 bytes to publish."""
        data = np.asarray(values, dtype="<f4")
        if data.shape != (self.size,):
            raise ValueError(f"{data.size} values for a {self.size}-value array")
        return self.head + data.tobytes()


def read_float32_array_cdr(data: bytes) -> np.ndarray:
    """The ``data`` (float32 ``[n]``) of a serialized ``std_msgs/Float32MultiArray``; the layout is skipped."""
    what = "Float32MultiArray"
    if bytes(data[:2]) != _LITTLE:
        raise CdrError(f"{what}: encapsulation {bytes(data[:2]).hex()} is not little-endian CDR")
    if len(data) < HEADER_BYTES + 4:
        raise CdrError(f"{what}: {len(data)} bytes is too short for a layout")
    (dims,) = struct.unpack_from("<I", data, HEADER_BYTES)
    offset = HEADER_BYTES + 4
    for _ in range(dims):
        offset = _after_string(data, offset, what)
        offset = _aligned(offset, 4) + 8  # size, stride
    offset = _aligned(offset, 4) + 4  # data_offset
    if offset + 4 > len(data):
        raise CdrError(f"{what}: the message ends ({len(data)} bytes) before its data at byte {offset}")
    (count,) = struct.unpack_from("<I", data, offset)
    if offset + 4 + 4 * count > len(data):
        raise CdrError(f"{what}: {len(data)} bytes is too short for {count} floats from byte {offset + 4}")
    return np.frombuffer(data, dtype="<f4", count=count, offset=offset + 4).astype(np.float32)
