package PVE::JSONSchema;

# Stand-in for Proxmox's PVE::JSONSchema in the plugin's tests: register_format and a lookup
# for checking registered formats.

use strict;
use warnings;

my %formats;

sub register_format {
    my ($name, $code) = @_;
    die "JSON schema format '$name' already registered\n" if $formats{$name};
    $formats{$name} = $code;
}

sub get_format { my ($name) = @_; return $formats{$name}; }

1;
