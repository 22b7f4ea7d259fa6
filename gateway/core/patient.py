"""The credential and person steps of the pipeline (SPEC section 7, Credentials).

Turns the typed credential of an input into the patient it names, or raises a Rejection /
ProtocolError with the SPEC's code. Single use of vouchers is checked here (2102/2207 only);
marking a voucher used happens in the settle commit.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime

import msgpack
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gateway.core.config import Rejection
from gateway.core.idempotency import UsedVouchers, voucher_key
from gateway.core.overlay import Overlay
from gateway.core.registry import Institution
from protocol import (
    CardCredential, Credential, ErrCode, RequestEnvelope, UnacceptedCredential, VoucherCredential, card_key,
    verify_card_mac, verify_voucher,
)

CERT_VOUCHER = "01"
CERT_CARD = "03"
SETTLING_INFNOS = frozenset({"2102", "2207"})


@dataclasses.dataclass(frozen=True)
class Patient:
    """The insured person a valid credential names."""

    psn_no: str
    insutype: str
    insuplc_admdvs: str
    cert_type: str
    voucher_key: str | None = None     # issuer + tid of an e-voucher
    voucher_exp_ms: int = 0

    def cross_province(self, institution: Institution) -> bool:
        """True when the person is insured in another province than the institution's."""
        return self.insuplc_admdvs[:2] != institution.admdvs[:2]


def _voucher_issuer(token: str) -> str:
    # verify_voucher returns the claims but not the issuer kid, which single use needs (a tid is
    # only unique per issuer); the token has already been verified, so this decode cannot fail.
    raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4))
    return msgpack.unpackb(raw, raw=False)[1]


def check_credential(cert: Credential, env: RequestEnvelope, medfee_fen: int, overlay: Overlay,
                     issuer_keys: dict[str, Ed25519PublicKey], master_keys: dict[str, bytes],
                     used: UsedVouchers, now_ms: int) -> Patient:
    """Verify the credential of a 1101/2101/2102/2206/2207 input; returns the patient.

    Raises Rejection or ProtocolError with CREDENTIAL_NOT_ACCEPTED, VOUCHER_*, CARD_BLOCKED or CARD_INVALID.
    """
    if isinstance(cert, UnacceptedCredential):
        raise Rejection(ErrCode.CREDENTIAL_NOT_ACCEPTED, f"mdtrt_cert_type {cert.cert_type!r} is not accepted")
    if isinstance(cert, VoucherCredential):
        claims = verify_voucher(cert.token, issuer_keys, env.fixmedins_code, now_ms // 1000)
        key = voucher_key(_voucher_issuer(cert.token), claims.tid)
        if env.infno in SETTLING_INFNOS and key in used:
            raise Rejection(ErrCode.VOUCHER_ALREADY_USED, "this e-voucher already paid for a settlement")
        return Patient(claims.psn_no, claims.insutype, claims.insuplc_admdvs, CERT_VOUCHER, key, claims.exp * 1000)
    assert isinstance(cert, CardCredential)
    if cert.card_no in overlay.blocked_cards:
        raise Rejection(ErrCode.CARD_BLOCKED, "the card is blocked")
    master_key = master_keys.get(cert.insuplc_admdvs[:2])
    if master_key is None or not verify_card_mac(
            card_key(master_key, cert.card_no, cert.card_sn), env.msgid, env.infno, env.fixmedins_code,
            medfee_fen, cert.psn_no, cert.insutype, cert.insuplc_admdvs, cert.card_mac):
        raise Rejection(ErrCode.CARD_INVALID, "the card cryptogram does not verify")
    return Patient(cert.psn_no, cert.insutype, cert.insuplc_admdvs, CERT_CARD)


def check_person(patient: Patient, institution: Institution, overlay: Overlay, date: datetime.date) -> None:
    """Refuse a blocked person, or a cross-province one without a filing valid on `date`."""
    if patient.psn_no in overlay.blocked_persons:
        raise Rejection(ErrCode.PERSON_INELIGIBLE, "the person is not eligible")
    if patient.cross_province(institution) and not overlay.filed(patient.psn_no, institution.admdvs, date):
        raise Rejection(ErrCode.CROSS_PROVINCE_NOT_FILED, "cross-province treatment needs a valid filing")
