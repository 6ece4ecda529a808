package PVE::Storage::Custom::StorPoolPlugin;

# Proxmox VE storage plugin for storpool. Thin: every operation is one or a few calls of the
# storpool management API (StorPool's /ctrl/1.0 JSON API); all state lives in the cluster.
# Volumes are anonymous (addressed as ~<globalId>) and carry their Proxmox identity in tags, as
# StorPool's own plugin does: virt=pve, pve=<storage id>, pve-loc, pve-type, pve-vm, pve-disk,
# pve-base, and on snapshots pve-snap (name) and pve-snap-v (the volume's globalId).
#
# Volume names: vm-<vmid>-disk-<n>-sp-<globalId>.raw (volumes),
#               base-<vmid>-disk-<n>-sp-<globalId>.raw (templates: snapshots).

use strict;
use warnings;

use HTTP::Tiny;
use JSON::PP;
use Sys::Hostname qw(hostname);

use PVE::Storage;
use PVE::Storage::Plugin;
use PVE::JSONSchema;
use PVE::Tools qw(file_get_contents);

use base qw(PVE::Storage::Plugin);

# The storage API version this plugin was written against.
use constant PLUGIN_APIVER => 10;
# The oldest one whose method signatures it still matches.
use constant PLUGIN_APIVER_MIN => 9;

my $JSON = JSON::PP->new->utf8->canonical;

PVE::JSONSchema::register_format('pve-storpool-url', \&_verify_url);

sub _verify_url {
    my ($url, $noerr) = @_;
    return $url if $url =~ m{^https?://[^/\s]+(?::\d+)?/?$};
    return undef if $noerr;
    die "invalid storpool API URL '$url' (expected http://host:port)\n";
}

# Version negotiation: a PVE whose storage API we match (PLUGIN_APIVER_MIN..PLUGIN_APIVER) gets
# its own version back; any other gets ours, which PVE accepts while it is within its APIAGE and
# otherwise refuses with its own message.
sub api {
    my $pve = PVE::Storage::APIVER();
    return $pve if $pve >= PLUGIN_APIVER_MIN && $pve <= PLUGIN_APIVER;
    return PLUGIN_APIVER;
}

sub type { return 'storpool'; }

sub plugindata {
    return {
        content => [ { images => 1, rootdir => 1 }, { images => 1, rootdir => 1 } ],
        format => [ { raw => 1 }, 'raw' ],
    };
}

sub properties {
    return {
        template => {
            description => 'storpool volume template for new disks (default: the storage id).',
            type => 'string',
        },
        'storpool-api' => {
            description => 'storpool API URL, http://host:port (default: SP_API_HTTP_HOST/PORT from storpool.conf).',
            type => 'string', format => 'pve-storpool-url',
        },
        'storpool-token' => {
            description => 'storpool API token (default: SP_AUTH_TOKEN from storpool.conf).',
            type => 'string',
        },
        'storpool-conf' => {
            description => 'storpool.conf to read (default /etc/storpool.conf).',
            type => 'string',
        },
        'storpool-nbd' => {
            description => 'Give QEMU an nbd+unix:// URI of the block service instead of the block device.',
            type => 'boolean',
        },
    };
}

sub options {
    return {
        nodes => { optional => 1 },
        disable => { optional => 1 },
        content => { optional => 1 },
        shared => { optional => 1 },
        template => { optional => 1 },
        'storpool-api' => { optional => 1 },
        'storpool-token' => { optional => 1 },
        'storpool-conf' => { optional => 1 },
        'storpool-nbd' => { optional => 1 },
    };
}

# ---------------------------------------------------------------------------------------------
# Configuration and the API

# storpool.conf as StorPool's tools read it: global section, then [<hostname>], then env overrides.
sub _read_conf {
    my ($path) = @_;
    my %conf;
    return \%conf if !-f $path;
    my $host = (split /\./, hostname())[0];
    my $section = '';
    my (%global, %mine);
    for my $line (split /\n/, file_get_contents($path)) {
        $line =~ s/^\s+|\s+$//g;
        next if $line eq '' || $line =~ /^[#;]/;
        if ($line =~ /^\[(.+)\]$/) { $section = $1; next; }
        my ($k, $v) = $line =~ /^([^=]+?)\s*=\s*(.*)$/ or next;
        if ($section eq '') { $global{$k} = $v; }
        elsif ($section eq $host || $section eq hostname()) { $mine{$k} = $v; }
    }
    %conf = (%global, %mine);
    for my $k (qw(SP_API_HTTP_HOST SP_API_HTTP_PORT SP_AUTH_TOKEN SP_OURID)) {
        $conf{$k} = $ENV{$k} if defined $ENV{$k} && $ENV{$k} ne '';
    }
    return \%conf;
}

sub _cfg {
    my ($scfg) = @_;
    my $conf = _read_conf($scfg->{'storpool-conf'} // $ENV{STORPOOL_CONF} // '/etc/storpool.conf');
    my $url = $scfg->{'storpool-api'}
        // ('http://' . ($conf->{SP_API_HTTP_HOST} // '127.0.0.1') . ':' . ($conf->{SP_API_HTTP_PORT} // 81));
    $url =~ s{/+$}{};
    my $token = $scfg->{'storpool-token'} // $conf->{SP_AUTH_TOKEN}
        // die "storpool: no API token (storpool-token or SP_AUTH_TOKEN in storpool.conf)\n";
    return {
        url => $url,
        token => $token,
        ourid => $conf->{SP_OURID},
        devroot => $ENV{STORPOOL_DEV_ROOT} // '/dev',
        rundir => $ENV{STORPOOL_RUNTIME_DIR} // '/run/storpool',
        loc => $conf->{SP_CLUSTER_NAME} // 'pve',
    };
}

sub _ourid {
    my ($c) = @_;
    die "storpool: SP_OURID is not set for this host in storpool.conf\n" if !defined $c->{ourid} || $c->{ourid} !~ /^\d+$/;
    return $c->{ourid} + 0;
}

my $http;

# One API call; returns `data`, dies with the API's error description.
sub _api {
    my ($scfg, $method, $call, $body) = @_;
    my $c = _cfg($scfg);
    $http //= HTTP::Tiny->new(timeout => 120, agent => 'pve-storpool/1');
    my %opt = (headers => { Authorization => "Storpool v1:$c->{token}" });
    if ($method eq 'POST') {
        $opt{content} = $JSON->encode($body // {});
        $opt{headers}{'Content-Type'} = 'application/json';
    }
    my $res = $http->request($method, "$c->{url}/ctrl/1.0/$call", \%opt);
    my $reply = eval { $JSON->decode($res->{content} // '') };
    if (!$reply) {
        my $why = $res->{status} == 599 ? $res->{content} : "HTTP $res->{status} $res->{reason}";
        chomp $why;
        die "storpool: $call: $why\n";
    }
    if (my $err = $reply->{error}) {
        die "storpool: $call: " . ($err->{descr} // $err->{name} // 'error') . "\n";
    }
    return $reply->{data};
}

sub _template {
    my ($storeid, $scfg) = @_;
    return $scfg->{template} // $storeid;
}

# ---------------------------------------------------------------------------------------------
# Names

# pve-disk holds the disk number, or "cloudinit" / "state-<snapshot>" for those special volumes.
sub _volname {
    my ($tags, $gid) = @_;
    my $kind = ($tags->{'pve-base'} // '0') eq '1' ? 'base' : 'vm';
    my $disk = $tags->{'pve-disk'};
    my $part = $disk =~ /^\d+$/ ? "disk-$disk" : $disk;
    return "$kind-$tags->{'pve-vm'}-$part-sp-$gid.raw";
}

my $GID = qr/[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+/;
my $PART = qr/disk-\d+|cloudinit|state-[A-Za-z0-9_-]+/;

sub parse_volname {
    my ($class, $volname) = @_;
    if ($volname =~ m/^(vm|base)-(\d+)-($PART)-sp-($GID)\.raw$/) {
        my ($kind, $vmid) = ($1, $2);
        return ('images', $volname, $vmid, undef, undef, $kind eq 'base' ? 1 : 0, 'raw');
    }
    die "storpool: unable to parse volume name '$volname'\n";
}

# The pve-disk tag of a requested name (vm-<vmid>-disk-<n>, vm-<vmid>-cloudinit, vm-<vmid>-state-<snap>).
sub _disk_of_name {
    my ($vmid, $name) = @_;
    my ($part) = $name =~ /^vm-\Q$vmid\E-($PART)$/
        or die "storpool: illegal name '$name' - should be 'vm-$vmid-disk-<n>', 'vm-$vmid-cloudinit' or 'vm-$vmid-state-<snapshot>'\n";
    return $part =~ /^disk-(\d+)$/ ? $1 : $part;
}

sub _gid {
    my ($volname) = @_;
    my ($gid) = $volname =~ /-sp-($GID)\.raw$/
        or die "storpool: unable to parse volume name '$volname'\n";
    return $gid;
}

sub _is_base {
    my ($volname) = @_;
    return $volname =~ /^base-/ ? 1 : 0;
}

sub _tags {
    my ($storeid, $scfg, $vmid, $disk, %more) = @_;
    return {
        virt => 'pve', pve => $storeid, 'pve-loc' => _cfg($scfg)->{loc}, 'pve-type' => 'images',
        'pve-vm' => "$vmid", 'pve-disk' => "$disk", 'pve-base' => '0', %more,
    };
}

sub _ours {
    my ($storeid, $scfg, $tags) = @_;
    return ($tags->{virt} // '') eq 'pve' && ($tags->{pve} // '') eq $storeid
        && ($tags->{'pve-loc'} // '') eq _cfg($scfg)->{loc};
}

# Everything of this storage: volumes and (base) snapshots, with tags.
sub _objects {
    my ($storeid, $scfg) = @_;
    my $all = _api($scfg, 'GET', 'VolumesAndSnapshotsList');
    my @vols = grep { _ours($storeid, $scfg, $_->{tags} // {}) } @{ $all->{volumes} };
    my @snaps = grep { _ours($storeid, $scfg, $_->{tags} // {}) } @{ $all->{snapshots} };
    return (\@vols, \@snaps);
}

sub _next_disk {
    my ($storeid, $scfg, $vmid) = @_;
    my ($vols, $snaps) = _objects($storeid, $scfg);
    my %used = map { ($_->{tags}{'pve-disk'} // '') => 1 } grep { ($_->{tags}{'pve-vm'} // '') eq "$vmid" } @$vols, @$snaps;
    my $n = 0;
    $n++ while $used{$n};
    return $n;
}

# The PVE snapshot <snap> of a volume.
sub _find_snapshot {
    my ($scfg, $gid, $snap) = @_;
    for my $s (@{ _api($scfg, 'GET', 'SnapshotsList') }) {
        next if $s->{name} =~ /^\*/;
        my $t = $s->{tags} // {};
        return $s if ($t->{'pve-snap-v'} // '') eq $gid && ($t->{'pve-snap'} // '') eq $snap;
    }
    die "storpool: no snapshot '$snap' of volume ~$gid\n";
}

# ---------------------------------------------------------------------------------------------
# Paths, activation

sub filesystem_path {
    my ($class, $scfg, $volname, $snapname) = @_;
    my ($vtype, undef, $vmid) = $class->parse_volname($volname);
    my $c = _cfg($scfg);
    my $gid = _gid($volname);
    $gid = _find_snapshot($scfg, $gid, $snapname)->{globalId} if defined $snapname;
    my $path = $scfg->{'storpool-nbd'}
        ? "nbd+unix:///?socket=$c->{rundir}/nbd/~$gid.sock"
        : "$c->{devroot}/storpool-byid/$gid";
    return wantarray ? ($path, $vmid, $vtype) : $path;
}

sub path {
    my ($class, $scfg, $volname, $storeid, $snapname) = @_;
    return $class->filesystem_path($scfg, $volname, $snapname);
}

sub _reassign {
    my ($scfg, @entries) = @_;
    return _api($scfg, 'POST', 'VolumesReassignWait', \@entries);
}

sub activate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;
    _api($scfg, 'GET', 'VolumeTemplateDescribe/' . _template($storeid, $scfg));
    return 1;
}

sub deactivate_storage {
    my ($class, $storeid, $scfg, $cache) = @_;
    return 1;
}

sub check_connection {
    my ($class, $storeid, $scfg) = @_;
    _api($scfg, 'GET', 'ServicesList');
    return 1;
}

sub activate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache) = @_;
    my $c = _cfg($scfg);
    my $id = _ourid($c);
    my $gid = _gid($volname);
    if (defined $snapname || _is_base($volname)) {
        $gid = _find_snapshot($scfg, $gid, $snapname)->{globalId} if defined $snapname;
        _reassign($scfg, { snapshot => "~$gid", ro => [$id] });
    } else {
        _reassign($scfg, { volume => "~$gid", rw => [$id] });
    }
    my $dev = "$c->{devroot}/storpool-byid/$gid";
    die "storpool: $dev did not appear after attaching ~$gid\n" if !-e $dev;
    return 1;
}

sub deactivate_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $cache) = @_;
    my $id = _ourid(_cfg($scfg));
    my $gid = _gid($volname);
    eval {
        if (defined $snapname || _is_base($volname)) {
            $gid = _find_snapshot($scfg, $gid, $snapname)->{globalId} if defined $snapname;
            _reassign($scfg, { snapshot => "~$gid", detach => [$id], force => JSON::PP::false });
        } else {
            _reassign($scfg, { volume => "~$gid", detach => [$id], force => JSON::PP::false });
        }
    };
    warn $@ if $@;
    return 1;
}

# map_volume is for users that need a block device (containers, host-side tools): like RBD's,
# which maps the kernel device even when `path` gives QEMU an rbd: URI, it always returns the
# device, also with storpool-nbd.
sub map_volume {
    my ($class, $storeid, $scfg, $volname, $snapname, $hints) = @_;
    $class->activate_volume($storeid, $scfg, $volname, $snapname);
    my $gid = _gid($volname);
    $gid = _find_snapshot($scfg, $gid, $snapname)->{globalId} if defined $snapname;
    return _cfg($scfg)->{devroot} . "/storpool-byid/$gid";
}

sub unmap_volume {
    my ($class, $storeid, $scfg, $volname, $snapname) = @_;
    return $class->deactivate_volume($storeid, $scfg, $volname, $snapname);
}

# ---------------------------------------------------------------------------------------------
# Images

sub alloc_image {
    my ($class, $storeid, $scfg, $vmid, $fmt, $name, $size) = @_;
    die "storpool: unsupported format '$fmt' (raw only)\n" if defined $fmt && $fmt ne 'raw';
    my $disk = defined $name && $name ne '' ? _disk_of_name($vmid, $name) : _next_disk($storeid, $scfg, $vmid);
    my $res = _api($scfg, 'POST', 'VolumeCreate', {
        template => _template($storeid, $scfg),
        size => $size * 1024,    # PVE sizes are KiB
        tags => _tags($storeid, $scfg, $vmid, $disk),
    });
    my $gid = $res->{globalId} // die "storpool: VolumeCreate returned no globalId\n";
    my $vol = _api($scfg, 'GET', "Volume/~$gid")->[0];
    return _volname($vol->{tags}, $vol->{globalId});
}

sub _detach_all {
    my ($scfg, $kind, $gid) = @_;
    eval { _reassign($scfg, { $kind => "~$gid", detach => 'all', force => JSON::PP::false }) };
    warn $@ if $@;
}

sub free_image {
    my ($class, $storeid, $scfg, $volname, $isBase, $format) = @_;
    my $gid = _gid($volname);
    if (_is_base($volname)) {
        _detach_all($scfg, 'snapshot', $gid);
        _api($scfg, 'POST', "SnapshotDelete/~$gid", {});
        return undef;
    }
    _detach_all($scfg, 'volume', $gid);
    _api($scfg, 'POST', "VolumeDelete/~$gid", {});
    for my $s (@{ _api($scfg, 'GET', 'SnapshotsList') }) {
        next if $s->{name} =~ /^\*/ || ($s->{tags}{'pve-snap-v'} // '') ne $gid;
        _api($scfg, 'POST', "SnapshotDelete/~$s->{globalId}", {});
    }
    return undef;
}

sub list_images {
    my ($class, $storeid, $scfg, $vmid, $vollist, $cache) = @_;
    my ($vols, $snaps) = _objects($storeid, $scfg);
    my @objs = (@$vols, grep { ($_->{tags}{'pve-base'} // '') eq '1' && $_->{name} !~ /^\*/ } @$snaps);
    my %want = map { $_ => 1 } @{ $vollist // [] };
    my @res;
    for my $o (@objs) {
        my $t = $o->{tags};
        next if !defined $t->{'pve-vm'} || !defined $t->{'pve-disk'};
        my $volid = "$storeid:" . _volname($t, $o->{globalId});
        if ($vollist) { next if !$want{$volid}; }
        elsif (defined $vmid) { next if $t->{'pve-vm'} ne "$vmid"; }
        push @res, { volid => $volid, format => 'raw', size => $o->{size}, vmid => $t->{'pve-vm'} + 0,
            ctime => $o->{creationTimestamp} // 0, ($o->{storedSize} ? (used => $o->{storedSize}) : ()) };
    }
    return [ sort { $a->{volid} cmp $b->{volid} } @res ];
}

sub status {
    my ($class, $storeid, $scfg, $cache) = @_;
    my $name = _template($storeid, $scfg);
    my ($t) = grep { $_->{name} eq $name } @{ _api($scfg, 'GET', 'VolumeTemplatesStatus') };
    die "storpool: no template '$name'\n" if !$t;
    my ($total, $free) = ($t->{stored}{capacity}, $t->{stored}{free});
    return ($total, $free, $total - $free, 1);
}

sub volume_size_info {
    my ($class, $scfg, $storeid, $volname, $timeout) = @_;
    my $gid = _gid($volname);
    my $o = _is_base($volname) ? _api($scfg, 'GET', "Snapshot/~$gid")->[0] : _api($scfg, 'GET', "VolumeDescribe/~$gid");
    my $size = $o->{size};
    return wantarray ? ($size, 'raw', $o->{storedSize} // 0, undef) : $size;
}

sub volume_resize {
    my ($class, $scfg, $storeid, $volname, $size, $running) = @_;
    die "storpool: cannot resize a base volume\n" if _is_base($volname);
    my $gid = _gid($volname);
    _api($scfg, 'POST', "VolumeUpdate/~$gid", { size => $size + 0 });
    # The host's block device has the new size once the client applied the change.
    my $id = _cfg($scfg)->{ourid};
    _api($scfg, 'GET', "ClientConfigWait/$id") if defined $id;
    return $size;
}

# ---------------------------------------------------------------------------------------------
# Snapshots, templates, clones

sub volume_snapshot {
    my ($class, $scfg, $storeid, $volname, $snap) = @_;
    my $gid = _gid($volname);
    my $vol = _api($scfg, 'GET', "Volume/~$gid")->[0];
    _api($scfg, 'POST', "VolumeSnapshot/~$gid", {
        tags => { %{ $vol->{tags} // {} }, 'pve-snap' => $snap, 'pve-snap-v' => $gid },
    });
    return undef;
}

sub volume_snapshot_rollback {
    my ($class, $scfg, $storeid, $volname, $snap) = @_;
    my $gid = _gid($volname);
    my $s = _find_snapshot($scfg, $gid, $snap);
    # A host must not keep the old data's pages: detached everywhere first (the VM is stopped).
    _reassign($scfg, { volume => "~$gid", detach => 'all', force => JSON::PP::false });
    _api($scfg, 'POST', "VolumeRevert/~$gid", { toSnapshot => "~$s->{globalId}", revertSize => JSON::PP::true });
    return undef;
}

# Container volumes are file systems on the block device: freeze them for a snapshot (as RBD does).
sub volume_snapshot_needs_fsfreeze {
    return 1;
}

sub volume_rollback_is_possible {
    my ($class, $scfg, $storeid, $volname, $snap, $blockers) = @_;
    _find_snapshot($scfg, _gid($volname), $snap);
    return 1;
}

sub volume_snapshot_delete {
    my ($class, $scfg, $storeid, $volname, $snap, $running) = @_;
    my $s = _find_snapshot($scfg, _gid($volname), $snap);
    _detach_all($scfg, 'snapshot', $s->{globalId});
    _api($scfg, 'POST', "SnapshotDelete/~$s->{globalId}", {});
    return undef;
}

sub rename_snapshot {
    my ($class, $scfg, $storeid, $volname, $source_snap, $target_snap) = @_;
    my $s = _find_snapshot($scfg, _gid($volname), $source_snap);
    _api($scfg, 'POST', "SnapshotUpdate/~$s->{globalId}", { tags => { 'pve-snap' => $target_snap } });
    return undef;
}

# A template's disk becomes a snapshot (read-only, the parent of linked clones).
sub create_base {
    my ($class, $storeid, $scfg, $volname) = @_;
    die "storpool: '$volname' is already a base volume\n" if _is_base($volname);
    my $gid = _gid($volname);
    my $vol = _api($scfg, 'GET', "Volume/~$gid")->[0];
    my $res = _api($scfg, 'POST', "VolumeSnapshot/~$gid", { tags => { %{ $vol->{tags} }, 'pve-base' => '1' } });
    my $sgid = $res->{snapshotGlobalId} // die "storpool: VolumeSnapshot returned no snapshotGlobalId\n";
    my $snap = _api($scfg, 'GET', "Snapshot/~$sgid")->[0];
    _reassign($scfg, { volume => "~$gid", detach => 'all', force => JSON::PP::false });
    _api($scfg, 'POST', "VolumeDelete/~$gid", {});
    return _volname($snap->{tags}, $sgid);
}

# A linked clone of a base (or of a volume's snapshot), or a full copy of a volume.
sub clone_image {
    my ($class, $scfg, $storeid, $volname, $vmid, $snap) = @_;
    my $gid = _gid($volname);
    my $disk = _next_disk($storeid, $scfg, $vmid);
    my %from;
    if (_is_base($volname)) { %from = (parent => "~$gid"); }
    elsif (defined $snap) { %from = (parent => '~' . _find_snapshot($scfg, $gid, $snap)->{globalId}); }
    else { %from = (baseOn => "~$gid"); }
    my $res = _api($scfg, 'POST', 'VolumeCreate', { %from, tags => _tags($storeid, $scfg, $vmid, $disk) });
    my $vol = _api($scfg, 'GET', "Volume/~$res->{globalId}")->[0];
    return _volname($vol->{tags}, $vol->{globalId});
}

sub rename_volume {
    my ($class, $scfg, $storeid, $source_volname, $target_vmid, $target_volname) = @_;
    my $gid = _gid($source_volname);
    die "storpool: cannot rename a base volume\n" if _is_base($source_volname);
    my $disk;
    if (defined $target_volname && $target_volname ne '') {
        (my $name = $target_volname) =~ s/-sp-$GID\.raw$//;
        $disk = _disk_of_name($target_vmid, $name);
    }
    $disk //= _next_disk($storeid, $scfg, $target_vmid);
    _api($scfg, 'POST', "VolumeUpdate/~$gid", { tags => { 'pve-vm' => "$target_vmid", 'pve-disk' => "$disk" } });
    my $vol = _api($scfg, 'GET', "Volume/~$gid")->[0];
    return "$storeid:" . _volname($vol->{tags}, $gid);
}

sub volume_has_feature {
    my ($class, $scfg, $feature, $storeid, $volname, $snapname, $running, $opts) = @_;
    my $features = {
        snapshot => { current => 1, snap => 1 },
        clone => { base => 1, snap => 1 },
        template => { current => 1 },
        copy => { base => 1, current => 1, snap => 1 },
        sparseinit => { base => 1, current => 1 },
        rename => { current => 1 },
    };
    my $key = defined $snapname ? 'snap' : _is_base($volname) ? 'base' : 'current';
    return $features->{$feature}{$key} ? 1 : undef;
}

1;
