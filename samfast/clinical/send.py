"""Send written DICOM files to a DICOM node (a planning system's or PACS's storage SCP) by C-STORE.

One association for all files (pynetdicom), explicit VR little endian as written. A refused
connection or association, a time-out or a failed store is one SendError line; the files sent are
only read, never moved or removed.
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

from samfast.errors import InputError, SamfastError

CALLING_AE = "SAMFAST"


class SendError(SamfastError):
    """The files were written locally but not (all) delivered to the DICOM node."""


@dataclasses.dataclass(frozen=True)
class Node:
    ae_title: str
    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.ae_title}@{self.host}:{self.port}"


def parse_node(text: str) -> Node:
    """'AE@HOST:PORT' -> Node; an AE title is 1-16 characters without backslash or control codes."""
    match = re.fullmatch(r"([^@]+)@(\[[^\]]+\]|[^:@\[\]]+):(\d+)", text.strip())
    if not match:
        raise InputError(f"--send {text!r}: expected AE@HOST:PORT, such as ORTHANC@127.0.0.1:4242")
    ae_title, host, port = match.group(1).strip(), match.group(2).strip("[]"), int(match.group(3))
    if not ae_title or len(ae_title) > 16 or re.search(r"[\\\x00-\x1f]", ae_title):
        raise InputError(f"--send {text!r}: the AE title needs 1-16 characters without a backslash")
    if not 1 <= port <= 65535:
        raise InputError(f"--send {text!r}: port {port} is not in 1-65535")
    return Node(ae_title, host, port)


def _status_text(status) -> str:
    code = int(getattr(status, "Status", -1))
    comment = str(getattr(status, "ErrorComment", "") or "")
    return f"status 0x{code:04X}" + (f" ({comment})" if comment else "")


def _reachable(node: Node, timeout: float) -> None:
    """Connect once with a plain socket, so a refused connection or an unknown host gets its own words."""
    import socket

    try:
        socket.create_connection((node.host, node.port), timeout=timeout).close()
    except OSError as error:
        why = "no answer" if isinstance(error, TimeoutError) else (error.strerror or str(error))
        raise SendError(f"cannot reach {node} ({why})") from None


def send_files(paths: list[Path], node: Node | str, timeout: float = 30.0) -> list[str]:
    """C-STORE every file to ``node`` over one association; the SOP instance UIDs sent, in order.

    Success and warning statuses (0x0000, 0x0001, 0xBxxx: stored, perhaps with coercion) count as
    delivered; anything else, a refused or aborted association, or no answer within ``timeout``
    seconds (connect, association and each store) raises SendError naming the file.
    """
    import pydicom
    from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
    from pynetdicom import AE, evt
    from pynetdicom.presentation import build_context

    node = parse_node(node) if isinstance(node, str) else node
    _reachable(node, timeout)
    datasets = [pydicom.dcmread(path) for path in paths]
    ae = AE(ae_title=CALLING_AE)
    for timer in ("connection_timeout", "acse_timeout", "dimse_timeout", "network_timeout"):
        setattr(ae, timer, timeout)
    classes = dict.fromkeys(str(ds.SOPClassUID) for ds in datasets)
    contexts = [build_context(uid, [ExplicitVRLittleEndian, ImplicitVRLittleEndian]) for uid in classes]
    # pynetdicom reports a refusal as an abort when the peer closes the connection right after its
    # A-ASSOCIATE-RJ (dcmtk's storescp --refuse does, ~10 % of the time here), so the PDU itself is
    # watched: a node that sent RJ refused, whatever state the association ends in.
    received: list[str] = []
    handlers = [(evt.EVT_PDU_RECV, lambda event: received.append(type(event.pdu).__name__))]
    assoc = ae.associate(
        node.host, node.port, contexts=contexts, ae_title=node.ae_title, evt_handlers=handlers
    )
    if not assoc.is_established:
        refused = assoc.is_rejected or "A_ASSOCIATE_RJ" in received
        why = "refused the association" if refused else "aborted the association or did not answer"
        raise SendError(f"{node} {why} (within {timeout:g} s)")
    sent = []
    try:
        for path, ds in zip(paths, datasets, strict=True):
            status = assoc.send_c_store(ds)
            code = int(getattr(status, "Status", -1))
            if not status or not (code in (0x0000, 0x0001) or 0xB000 <= code <= 0xBFFF):
                reason = _status_text(status) if status else f"no answer within {timeout:g} s"
                raise SendError(f"{node} did not store {path.name}: {reason}")
            sent.append(str(ds.SOPInstanceUID))
    finally:
        if assoc.is_established:
            assoc.release()
    return sent
