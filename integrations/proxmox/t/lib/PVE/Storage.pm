package PVE::Storage;

# Stand-in for Proxmox's PVE::Storage in the plugin's tests: only what the plugin uses (its
# API version constants). PVE_APIVER / PVE_APIAGE let a test play another PVE release.

use strict;
use warnings;

sub APIVER { return $ENV{PVE_APIVER} // 10; }
sub APIAGE { return $ENV{PVE_APIAGE} // 1; }

1;
