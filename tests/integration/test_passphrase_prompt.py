"""The passphrase prompt on a real terminal (pexpect): no echo, retry, confirm."""

import os

import pexpect
import pytest

from conftest import PASSPHRASE

pytestmark = pytest.mark.namespaces


def _spawn(world, *args):
    return pexpect.spawn(world.exe, list(map(str, args)), env=world.env, cwd=str(world.home), timeout=30, encoding="utf-8")


def test_wrong_passphrase_is_asked_again_then_the_command_runs(vault):
    child = _spawn(vault, "run", "taxes", "--", "sh", "-c", 'echo "inside:$NSSHELL_VAULT"')
    child.expect("Passphrase for taxes: ")
    child.sendline("not it")
    child.expect("wrong passphrase, try again")
    child.expect("Passphrase for taxes: ")
    child.sendline(PASSPHRASE)
    child.expect("inside:taxes")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 0
    assert PASSPHRASE not in child.before  # never echoed


def test_three_wrong_passphrases_give_up_with_exit_4(vault):
    child = _spawn(vault, "run", "taxes", "--", "true")
    for _ in range(3):
        child.expect("Passphrase for taxes: ")
        child.sendline("wrong")
    child.expect("nsshell: wrong passphrase")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 4
    vault.wait_until(lambda: vault.holder_pids() == [], what="failed holders to exit")
    assert os.listdir(vault.mountpoint("taxes")) == []


def test_create_asks_twice_and_refuses_a_mismatch(world):
    child = _spawn(world, "create", "taxes")
    child.expect("New passphrase for taxes: ")
    child.sendline("one")
    child.expect("Repeat to confirm: ")
    child.sendline("two")
    child.expect("the two passphrases differ; nothing was created")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 4
    assert not world.cipher_dir("taxes").exists()
    assert world.run("list", "--json", check=True).stdout.strip() == "[]"


def test_create_refuses_an_empty_passphrase_before_asking_to_repeat_it(world):
    child = _spawn(world, "create", "taxes")
    child.expect("New passphrase for taxes: ")
    child.sendline("")
    index = child.expect(["the passphrase cannot be empty", "Repeat to confirm: "])
    assert index == 0, "an empty passphrase was only refused after the repeat"
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 4
    assert not world.cipher_dir("taxes").exists()
