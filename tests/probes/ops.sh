#!/bin/sh
# File operations on the current directory; run natively and in a VM, the results are
# compared. Every step must succeed (set -e) unless it is marked as an expected failure.
set -eu
echo one > a
echo two >> a
printf '%01000d' 0 > big
mkdir -p d/e/f
mv a d/moved
ln d/moved hard
ln -s d/moved soft
ln -s nowhere dangling
chmod 640 hard
chmod 711 d/e
cp big d/e/f/copy
rm big
if rmdir d/e/f 2>/dev/null; then echo "rmdir of a non-empty directory succeeded"; exit 1; fi
rm -r d/e/f
mkdir g
touch g/one g/two
mv g h
truncate -s 100 h/one
mkfifo fifo
chmod 4755 d/moved
mkdir -m 1777 sticky
umask 077
echo private > private
mkdir private-dir
umask 022
cat d/moved hard > joined
ln -sf joined soft
mv -T h h2
rm h2/two
touch -d '2001-02-03 04:05:06' joined
echo done
