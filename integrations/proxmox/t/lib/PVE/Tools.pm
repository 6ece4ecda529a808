package PVE::Tools;

# Stand-in for Proxmox's PVE::Tools in the plugin's tests: file_get_contents only.

use strict;
use warnings;

use base 'Exporter';
our @EXPORT_OK = qw(file_get_contents);

sub file_get_contents {
    my ($filename) = @_;
    open(my $fh, '<', $filename) or die "can't open '$filename' - $!\n";
    local $/;
    my $content = <$fh>;
    close($fh);
    return $content // '';
}

1;
