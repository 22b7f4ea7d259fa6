"""The admin API (SPEC section 11): roles, protective actions, maker-checker, audit, key rotation.

`AdminApi(runtime, admins, signing_key_path, seal_key=None)` is the admin listener's `AdminHandler`
(cluster mode passes `seal_key`: rotated keys then travel sealed in the journal, not in files);
`keyfiles.finish_pending_rotation` must run at start before the key ring is built;
`cli.main(argv)` is `yibao-gateway admin ...`.
"""

from gateway.admin.api import AdminApi
from gateway.admin.keyfiles import finish_pending_rotation

__all__ = ["AdminApi", "finish_pending_rotation"]
