"""Installing a verified release: unpack, switch ``current``, trial start, commit or roll back.

The contract with the update client (gateway/update/client.py)::

    installer = Installer(
        releases_root,            # /opt/dicom-gateway/releases
        current_link,             # /opt/dicom-gateway/current (symlink -> releases/<version>)
        state_dir,                # /var/lib/dicom-gateway (state under <state_dir>/update/)
        clock,                    # gateway.clock.Clock
        logger,                   # logging.Logger
        restart,                  # Callable[[], None]: `systemctl restart dicom-gateway`
        probe=...,                # Callable[[TrialContext], TrialVerdict] | None (selftest.py)
        trial_seconds=300.0,      # the deadline for READY + self-test of a new release
    )
    installer.resume()            # at every start of the updater, the health check, the gateway
    installer.downloading(offer)  # optional: record the download before it starts
    outcome = installer.install(bundle_path, offer)   # -> InstallOutcome

``offer`` is anything with ``version: str``, ``target_name: str`` and ``hashes: Mapping[str,
str]`` (the TUF target's hashes, e.g. {"sha256": "..."}): the client's UpdateOffer fits.
``install`` re-checks the bundle's sha256 against the offer before unpacking.

The states, persisted in ``<state_dir>/update/install.json`` (written atomically, fsync'd):
downloading -> verified -> installed -> trial -> committed | rolled_back -> reported.
Every step is idempotent, so ``resume()`` after a kill -9 or power cut at any point converges to
committed or rolled_back with ``current`` pointing at a whole release, never at a broken one.
"""
