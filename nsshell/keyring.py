"""Vault passphrases in the login keyring, through the Secret Service API
(GNOME Keyring, KWallet, KeePassXC), with secretstorage (on jeepney).

An entry is found by its attributes ``application=nsshell, vault=NAME``.
The passphrase goes from here to the holder the same way a typed one does;
it is never written to a file, argv, the environment or a log.

Imported only by ``nsshell keyring``, ``nsshell passwd`` and the unlock path
of a vault whose registry entry says ``keyring = true``: secretstorage and
the cryptography package it uses are far too heavy for anything else.
"""

from nsshell.errors import FAILURE, NsshellError


class KeyringUnavailable(Exception):
    """No usable keyring or entry; the text says why in one line."""


def attributes(name):
    return {"application": "nsshell", "vault": name}


def _connection():
    try:
        import secretstorage
    except ImportError:
        raise KeyringUnavailable("the secretstorage Python package is not installed") from None
    try:
        return secretstorage.dbus_init()
    except (secretstorage.exceptions.SecretServiceNotAvailableException, OSError, KeyError) as exc:
        raise KeyringUnavailable(f"no Secret Service keyring is reachable ({_short(exc)})") from None


def _short(exc):
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


def lookup(name):
    """The stored passphrase (bytes).  KeyringUnavailable if the keyring is
    absent or locked, or holds no entry for the vault."""
    conn = _connection()
    import secretstorage

    try:
        items = list(secretstorage.search_items(conn, attributes(name)))
        if not items:
            raise KeyringUnavailable(f"the keyring holds no passphrase for vault {name!r}")
        unlocked = [item for item in items if not item.is_locked()]
        if not unlocked:
            raise KeyringUnavailable("the keyring is locked (unlock it, e.g. by logging in to the desktop)")
        secret = unlocked[0].get_secret()
        if not secret:
            raise KeyringUnavailable(f"the keyring's entry for vault {name!r} is empty")
        return bytes(secret)
    except secretstorage.exceptions.SecretStorageException as exc:
        raise KeyringUnavailable(f"the keyring refused ({_short(exc)})") from None
    finally:
        conn.close()


def store(name, passphrase):
    """Create or replace the vault's entry in the default collection."""
    try:
        conn = _connection()
    except KeyringUnavailable as exc:
        raise NsshellError(f"cannot store the passphrase: {exc}", FAILURE) from None
    import secretstorage

    try:
        collection = secretstorage.get_default_collection(conn)
        if collection.is_locked():
            raise NsshellError(
                "the keyring is locked; unlock it (log in to the desktop, or open it in Seahorse/KWalletManager) "
                "and try again",
                FAILURE,
            )
        collection.create_item(f"nsshell vault {name}", attributes(name), passphrase, replace=True)
    except secretstorage.exceptions.SecretStorageException as exc:
        raise NsshellError(f"the keyring refused to store the passphrase ({_short(exc)})", FAILURE) from None
    finally:
        conn.close()


def delete(name):
    """Remove every entry for the vault; returns how many there were."""
    try:
        conn = _connection()
    except KeyringUnavailable as exc:
        raise NsshellError(f"cannot remove the passphrase: {exc}", FAILURE) from None
    import secretstorage

    try:
        items = list(secretstorage.search_items(conn, attributes(name)))
        for item in items:
            item.delete()
        return len(items)
    except secretstorage.exceptions.SecretStorageException as exc:
        raise NsshellError(f"the keyring refused to remove the passphrase ({_short(exc)})", FAILURE) from None
    finally:
        conn.close()
