#!/bin/bash
# t_powercut_names — the power-cut suite's workloads on names and offline tools (see
# t_powercut.sh): the set created from nothing; images created, grown, shrunk, renamed (over
# another), removed and created again, with directory fsyncs through the mount; check and
# repair of planted differences; rescale-bitmap; an ext4 inside an image (e2fsck after
# recovery). 40 states each (the name bugs it guards against showed in 1 state of 9 to 1 of
# 2), one recovered; about 40 s.
FM_PC_WORKLOADS=${FM_PC_WORKLOADS:-create namespace checkrepair rescale ext4 checksums} FM_PC_STATES=${FM_PC_STATES:-40} \
  FM_PC_RECOVER_EVERY=${FM_PC_RECOVER_EVERY:-40} exec bash "$(dirname "$0")/t_powercut.sh"
