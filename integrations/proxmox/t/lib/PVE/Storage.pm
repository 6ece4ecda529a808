package PVE::Storage;

# Stand-in for Proxmox's PVE::Storage in the plugin's tests: only what the plugin uses (its
# API version). PVE_APIVER lets a test play another PVE release.

use strict;
use warnings;

sub APIVER { return $ENV{PVE_APIVER} // 10; }

1;
