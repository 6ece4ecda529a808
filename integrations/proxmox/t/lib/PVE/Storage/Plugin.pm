package PVE::Storage::Plugin;

# Stand-in for Proxmox's storage plugin base class in the plugin's tests: the plugin overrides
# every method it needs, so the base only has to exist.

use strict;
use warnings;

1;
