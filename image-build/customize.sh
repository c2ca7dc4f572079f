#!/bin/sh
# Runs inside one variant's arm64 chroot (qemu-user), after build.sh has copied the overlay
# (image-build/rootfs), the project's units and the release.
#
#   /build/customize.sh VARIANT UNIT...
#
# VARIANT's boot packages come from /build/packages; UNIT... are the project's units to enable.
# Writes /build/packages.txt (dpkg-query -W: what the image holds, with versions).
set -eu
variant=$1
shift

# --- the boot bits: the only difference between the variants ---------------------------------
if [ -s /build/packages ]; then
    # shellcheck disable=SC2046  # one package a word
    apt-get install -y -q --no-install-recommends $(cat /build/packages)
fi

# rpi4: raspi-firmware's kernel hook writes the FAT's cmdline.txt and config.txt from
# /etc/default/raspi-firmware, which it sources. Left alone it would name the chroot's own root
# device (findmnt /) and mount it rw. Its file is a conffile: appended to, never replaced, so
# dpkg keeps it as ours. The update-initramfs below runs the hook again with these.
if [ "$variant" = rpi4 ]; then
    cat >>/etc/default/raspi-firmware <<'EOF'

# dicom-gateway appliance (image-build/customize.sh): root slot A by label; HDMI is the last
# console, so first boot's address and token and the emergency shell are on the screen, and the
# serial line (GPIO 14/15, 115200 8N1) shows the same.
ROOTPART=LABEL=rootA
CONSOLES="ttyS1,115200 tty0"
EOF
    # The Pi 4's mini-UART takes its clock from the GPU core, whose 500/550 MHz steps corrupt the
    # serial console; the hook's GPU_FREQ only applies when it runs on a Pi 4 (it reads the
    # board's model), never in this chroot, so the setting goes in through the custom file.
    printf '[pi4]\ncore_freq=360\n[all]\n' >/etc/default/raspi-firmware-custom
    # The hook writes "rw"; the last of ro/rw on the command line wins (initramfs-tools), and
    # the root file system is read-only (fstab).
    echo "ro panic=10" >/etc/default/raspi-extra-cmdline
fi

# --- users and folders (systemd-sysusers, systemd-tmpfiles), as at a boot ---------------------
systemd-sysusers
systemd-tmpfiles --create --exclude-prefix=/dev --exclude-prefix=/proc --exclude-prefix=/sys \
    --exclude-prefix=/run --exclude-prefix=/tmp --exclude-prefix=/var/tmp

# --- accounts: root locked, no password anywhere -------------------------------------------------
passwd -l root
# The devices' SMB accounts are made on the box, after the image is built, where /etc is
# read-only: NSS reads them from libnss-extrausers' folder, bound from the data partition.
sed -i -E 's/^(passwd|group|shadow):([[:space:]]+)files( |$)/\1:\2files extrausers\3/' /etc/nsswitch.conf
grep -q '^passwd:.*extrausers' /etc/nsswitch.conf
mkdir -p /var/lib/extrausers

# --- units --------------------------------------------------------------------------------------
# The project's (dicom-gateway*, whoever wrote them), then the appliance's own services.
if [ $# -gt 0 ]; then
    systemctl enable "$@"
fi
systemctl enable systemd-networkd.service systemd-resolved.service systemd-timesyncd.service \
    systemd-time-wait-sync.service fake-hwclock.service avahi-daemon.service ssh.service
# ssh.service only starts with /boot/firmware/ssh/authorized_keys (ssh.service.d); no socket
# activation around that condition.
systemctl disable ssh.socket 2>/dev/null || true
# Samba's smbd is started by the gateway's share unit with its generated configuration, never
# with Debian's default smb.conf; NetBIOS and the AD DC are not wanted at all.
systemctl disable smbd.service
systemctl mask nmbd.service samba-ad-dc.service

# --- identity: nothing per machine is baked into the image ---------------------------------------
rm -f /etc/ssh/ssh_host_*
: >/etc/machine-id
rm -f /var/lib/dbus/machine-id
ln -sf /etc/machine-id /var/lib/dbus/machine-id
ln -sfn /data/system/hostname /etc/hostname
mkdir -p /etc/avahi/services
ln -sfn /run/dicom-gateway/avahi.service /etc/avahi/services/dicom-gateway.service
# The clock never starts before the image was built (systemd reads this file's mtime).
touch -d "@$SOURCE_DATE_EPOCH" /usr/lib/clock-epoch

# --- mount points (the image ships them empty) ---------------------------------------------------
mkdir -p /data /boot/firmware

# --- the initramfs with the data partition's hook (rpi4: raspi-firmware copies it to the FAT) ---
update-initramfs -u -k all

# --- what the image holds, then leave no package manager state behind ---------------------------
dpkg-query -W -f '${binary:Package}\t${Version}\n' | sort >/build/packages.txt
apt-get clean
rm -rf /var/lib/apt/lists/* /var/cache/* /var/log/* /tmp/* /var/tmp/* /root/.cache
ln -sfn ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf
echo "customised $variant"
