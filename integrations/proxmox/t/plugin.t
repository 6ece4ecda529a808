#!/usr/bin/perl
# Every method of PVE::Storage::Custom::StorPoolPlugin against a real storpool cluster (started by
# test/proxmox.test.ts, which sets STORPOOL_CONF, STORPOOL_DEV_ROOT and STORPOOL_RUNTIME_DIR and
# runs this with prove). PVE itself is not here: t/lib has stand-ins for the modules it imports.

use strict;
use warnings;

use Fcntl qw(O_RDWR O_RDONLY O_SYNC SEEK_SET);
use Test::More;

use PVE::Storage::Custom::StorPoolPlugin;

plan skip_all => 'needs a cluster: STORPOOL_CONF' if !$ENV{STORPOOL_CONF};

my $P = 'PVE::Storage::Custom::StorPoolPlugin';
my $sid = 'sp1';
my $scfg = { type => 'storpool', template => 'default', content => { images => 1 } };
my $MiB = 1024 * 1024;

sub gid_of { my ($v) = @_; my ($g) = $v =~ /-sp-(.+)\.raw$/; return $g; }

sub write_block {
    my ($dev, $offset, $char) = @_;
    sysopen(my $fh, $dev, O_RDWR | O_SYNC) or die "open $dev: $!";
    sysseek($fh, $offset, SEEK_SET) or die "seek: $!";
    syswrite($fh, $char x 4096) == 4096 or die "write: $!";
    close($fh) or die "close: $!";
}

# Direct I/O (dd): what the storage has, not what some page cache kept.
sub read_block {
    my ($dev, $offset) = @_;
    my $buf = `dd if='$dev' bs=4096 skip=@{[ $offset / 4096 ]} count=1 iflag=direct status=none`;
    die "dd $dev failed: $?" if $? != 0 || length($buf) != 4096;
    return $buf;
}

sub snapshots_of {
    my ($gid) = @_;
    return [ sort map { $_->{tags}{'pve-snap'} } grep { $_->{name} !~ /^\*/ && ($_->{tags}{'pve-snap-v'} // '') eq $gid }
        @{ PVE::Storage::Custom::StorPoolPlugin::_api($scfg, 'GET', 'SnapshotsList') } ];
}

subtest 'api version negotiation' => sub {
    local $ENV{PVE_APIVER} = 10;
    is($P->api, 10, 'PVE 10: 10');
    $ENV{PVE_APIVER} = 9;
    is($P->api, 9, 'PVE 9 (same method signatures): 9');
    $ENV{PVE_APIVER} = 11;
    is($P->api, 10, 'newer PVE: ours (10), which it accepts within its APIAGE');
    $ENV{PVE_APIVER} = 3;
    is($P->api, 10, 'much older PVE: ours, which it refuses');
};

subtest 'type, plugindata, properties, options' => sub {
    is($P->type, 'storpool');
    my $pd = $P->plugindata;
    is_deeply($pd->{content}[0], { images => 1, rootdir => 1 }, 'images + rootdir');
    is_deeply($pd->{format}, [ { raw => 1 }, 'raw' ], 'raw');
    is_deeply([ sort keys %{ $P->properties } ], [ qw(storpool-api storpool-conf storpool-nbd storpool-token template) ]);
    is($P->volume_snapshot_needs_fsfreeze, 1, 'container snapshots freeze the file system (as RBD)');
    ok($P->options->{$_}{optional}, "$_ optional") for qw(template storpool-api storpool-token nodes content);
    my $fmt = PVE::JSONSchema::get_format('pve-storpool-url');
    ok($fmt, 'URL format registered');
    is($fmt->('http://10.1.2.3:81'), 'http://10.1.2.3:81', 'URL accepted');
    ok(!defined $fmt->('ftp://x', 1), 'bad URL refused');
};

subtest 'storage: connection, activation, status' => sub {
    ok($P->check_connection($sid, $scfg), 'check_connection');
    ok($P->activate_storage($sid, $scfg), 'activate_storage: the template exists');
    eval { $P->activate_storage('nosuch', { type => 'storpool' }) };
    like($@, qr/^storpool: VolumeTemplateDescribe\/nosuch: /, 'template defaults to the storage id; missing one dies');
    my ($total, $free, $used, $active) = $P->status($sid, $scfg);
    ok($total > 0, "total $total");
    ok($free > 0 && $free <= $total, "free $free");
    is($used, $total - $free, 'used');
    is($active, 1, 'active');
    ok($P->deactivate_storage($sid, $scfg), 'deactivate_storage');
    my $bad = { %$scfg, 'storpool-token' => 'wrong' };
    eval { $P->status($sid, $bad) };
    like($@, qr/^storpool: VolumeTemplatesStatus: /, 'a wrong token is an error');
};

my ($v0, $v1, $v5);
subtest 'alloc_image, parse_volname, list_images, volume_size_info' => sub {
    $v0 = $P->alloc_image($sid, $scfg, 100, 'raw', undef, 64 * 1024);
    like($v0, qr/^vm-100-disk-0-sp-[a-z0-9]+\.[a-z0-9]+\.[a-z0-9]+\.raw$/, "first disk $v0");
    $v1 = $P->alloc_image($sid, $scfg, 100, 'raw', undef, 64 * 1024);
    like($v1, qr/^vm-100-disk-1-sp-/, 'next free disk number');
    $v5 = $P->alloc_image($sid, $scfg, 100, 'raw', 'vm-100-disk-5', 32 * 1024);
    like($v5, qr/^vm-100-disk-5-sp-/, 'named');
    eval { $P->alloc_image($sid, $scfg, 100, 'raw', 'vm-101-disk-1', 1024) };
    like($@, qr/illegal name/, 'name of another VM refused');
    eval { $P->alloc_image($sid, $scfg, 100, 'qcow2', undef, 1024) };
    like($@, qr/raw only/, 'qcow2 refused');

    is_deeply([ $P->parse_volname($v0) ], [ 'images', $v0, 100, undef, undef, 0, 'raw' ], 'parse_volname');
    eval { $P->parse_volname('vm-100-disk-0.qcow2') };
    like($@, qr/unable to parse/, 'foreign name refused');

    my $vol = PVE::Storage::Custom::StorPoolPlugin::_api($scfg, 'GET', 'Volume/~' . gid_of($v0))->[0];
    is($vol->{name}, '~' . gid_of($v0), 'anonymous volume');
    is_deeply({ map { $_ => $vol->{tags}{$_} } qw(virt pve pve-type pve-vm pve-disk pve-base) },
        { virt => 'pve', pve => $sid, 'pve-type' => 'images', 'pve-vm' => '100', 'pve-disk' => '0', 'pve-base' => '0' }, 'tags');

    my $list = $P->list_images($sid, $scfg, 100);
    is_deeply([ map { $_->{volid} } @$list ], [ sort map { "$sid:$_" } $v0, $v1, $v5 ], 'list_images of VM 100');
    is($list->[0]{format}, 'raw');
    is_deeply([ sort map { $_->{size} } @$list ], [ 32 * $MiB, 64 * $MiB, 64 * $MiB ], 'sizes');
    is_deeply($P->list_images($sid, $scfg, 101), [], 'VM 101 has none');
    is(scalar @{ $P->list_images($sid, $scfg, undef, ["$sid:$v1"]) }, 1, 'by volume list');
    is_deeply($P->list_images('other', $scfg, 100), [], 'another storage id sees none');

    is(scalar $P->volume_size_info($scfg, $sid, $v0), 64 * $MiB, 'volume_size_info');
    my ($size, $format) = $P->volume_size_info($scfg, $sid, $v5);
    is_deeply([ $size, $format ], [ 32 * $MiB, 'raw' ], 'list context');
};

subtest 'cloud-init and VM state volumes' => sub {
    my $ci = $P->alloc_image($sid, $scfg, 100, 'raw', 'vm-100-cloudinit', 4 * 1024);
    like($ci, qr/^vm-100-cloudinit-sp-[a-z0-9.]+\.raw$/, $ci);
    my $st = $P->alloc_image($sid, $scfg, 100, 'raw', 'vm-100-state-before_upgrade', 8 * 1024);
    like($st, qr/^vm-100-state-before_upgrade-sp-/, $st);
    is(($P->parse_volname($st))[2], 100, 'parse_volname: vmid');
    my $tags = PVE::Storage::Custom::StorPoolPlugin::_api($scfg, 'GET', 'Volume/~' . gid_of($ci))->[0]{tags};
    is($tags->{'pve-disk'}, 'cloudinit', 'pve-disk=cloudinit');
    my @ids = map { $_->{volid} } @{ $P->list_images($sid, $scfg, 100) };
    ok((grep { $_ eq "$sid:$ci" } @ids) && (grep { $_ eq "$sid:$st" } @ids), 'listed');
    like($P->alloc_image($sid, $scfg, 100, 'raw', undef, 1024), qr/^vm-100-disk-2-sp-/, 'they take no disk number');
    $P->free_image($sid, $scfg, $_) for $ci, $st, (grep { /^vm-100-disk-2-/ } map { (split /:/, $_->{volid})[1] } @{ $P->list_images($sid, $scfg, 100) });
    is(scalar @{ $P->list_images($sid, $scfg, 100) }, 3, 'freed');
};

subtest 'activate_volume, path, snapshot, rollback' => sub {
    my $path = scalar $P->path($scfg, $v0, $sid);
    is($path, "$ENV{STORPOOL_DEV_ROOT}/storpool-byid/" . gid_of($v0), 'path: /dev/storpool-byid/<globalId>');
    my @fp = $P->filesystem_path($scfg, $v0);
    is_deeply([ @fp[1, 2] ], [ 100, 'images' ], 'filesystem_path list context');
    ok($P->activate_volume($sid, $scfg, $v0), 'activate_volume');
    ok(-b $path, 'block device');
    write_block($path, $MiB, 'A');
    $P->volume_snapshot($scfg, $sid, $v0, 'snap1');
    is_deeply(snapshots_of(gid_of($v0)), ['snap1'], 'snapshot tagged pve-snap/pve-snap-v');
    write_block($path, $MiB, 'B');
    is(substr(read_block($path, $MiB), 0, 4), 'BBBB', 'new data');
    ok($P->volume_rollback_is_possible($scfg, $sid, $v0, 'snap1'), 'rollback possible');
    eval { $P->volume_rollback_is_possible($scfg, $sid, $v0, 'nosnap') };
    like($@, qr/no snapshot 'nosnap'/, 'unknown snapshot');
    $P->deactivate_volume($sid, $scfg, $v0);
    ok(!-e $path, 'deactivate_volume removes the device');
    $P->volume_snapshot_rollback($scfg, $sid, $v0, 'snap1');
    $P->activate_volume($sid, $scfg, $v0);
    is(substr(read_block($path, $MiB), 0, 4), 'AAAA', 'rolled back');
    $P->deactivate_volume($sid, $scfg, $v0);
};

subtest 'volume_resize' => sub {
    is($P->volume_resize($scfg, $sid, $v0, 128 * $MiB, 0), 128 * $MiB, 'returns the size');
    is(scalar $P->volume_size_info($scfg, $sid, $v0), 128 * $MiB, 'grown');
};

subtest 'volume_has_feature' => sub {
    my %want = (
        snapshot => [ 1, undef, 1 ], clone => [ undef, 1, 1 ], template => [ 1, undef, undef ],
        copy => [ 1, 1, 1 ], sparseinit => [ 1, 1, undef ], rename => [ 1, undef, undef ],
    );
    my $base = 'base-100-disk-9-sp-a.b.c.raw';
    for my $f (sort keys %want) {
        my ($cur, $b, $snap) = @{ $want{$f} };
        is($P->volume_has_feature($scfg, $f, $sid, $v0, undef), $cur, "$f current");
        is($P->volume_has_feature($scfg, $f, $sid, $base, undef), $b, "$f base");
        is($P->volume_has_feature($scfg, $f, $sid, $v0, 'snap1'), $snap, "$f snap");
    }
    ok(!$P->volume_has_feature($scfg, 'nosuch', $sid, $v0, undef), 'unknown feature');
};

my ($c200, $base, $c201);
subtest 'clone_image from a snapshot; create_base; linked clone of the base' => sub {
    $c200 = $P->clone_image($scfg, $sid, $v0, 200, 'snap1');
    like($c200, qr/^vm-200-disk-0-sp-/, "clone $c200");
    $P->activate_volume($sid, $scfg, $c200);
    is(substr(read_block(scalar $P->path($scfg, $c200, $sid), $MiB), 0, 4), 'AAAA', "the snapshot's data");
    $P->deactivate_volume($sid, $scfg, $c200);

    my $g1 = gid_of($v1);
    $base = $P->create_base($sid, $scfg, $v1);
    like($base, qr/^base-100-disk-1-sp-/, "base $base");
    is(($P->parse_volname($base))[5], 1, 'isBase');
    ok(!grep({ $_->{volid} eq "$sid:$v1" } @{ $P->list_images($sid, $scfg, 100) }), 'the volume is gone');
    ok(grep({ $_->{volid} eq "$sid:$base" } @{ $P->list_images($sid, $scfg, 100) }), 'the base is listed');
    is(scalar $P->volume_size_info($scfg, $sid, $base), 64 * $MiB, 'base size');
    eval { $P->volume_resize($scfg, $sid, $base, 1, 0) };
    like($@, qr/base/, 'a base is not resized');

    $c201 = $P->clone_image($scfg, $sid, $base, 201);
    like($c201, qr/^vm-201-disk-0-sp-/, "linked clone $c201");
    my $parent = PVE::Storage::Custom::StorPoolPlugin::_api($scfg, 'GET', 'Volume/~' . gid_of($c201))->[0]{parentName};
    my $bsnap = PVE::Storage::Custom::StorPoolPlugin::_api($scfg, 'GET', 'Snapshot/~' . gid_of($base))->[0];
    is($parent, $bsnap->{name}, 'parent is the base snapshot');
    is($bsnap->{tags}{'pve-base'}, '1', 'the base is tagged pve-base=1');

    my $copy = $P->clone_image($scfg, $sid, $v5, 202);
    like($copy, qr/^vm-202-disk-0-sp-/, 'full copy of a volume (baseOn)');
    $P->free_image($sid, $scfg, $copy);

    ok($P->activate_volume($sid, $scfg, $base), 'a base attaches read-only');
    ok(-b scalar($P->path($scfg, $base, $sid)), 'base device');
    $P->deactivate_volume($sid, $scfg, $base);
};

subtest 'map_volume, nbd paths' => sub {
    my $dev = $P->map_volume($sid, $scfg, $v5);
    ok(-b $dev, "map_volume: $dev");
    my $nbd = { %$scfg, 'storpool-nbd' => 1 };
    my $uri = scalar $P->path($nbd, $v5, $sid);
    my $sock = "$ENV{STORPOOL_RUNTIME_DIR}/nbd/~" . gid_of($v5) . '.sock';
    is($uri, "nbd+unix:///?socket=$sock", 'nbd+unix URI');
    ok(-S $sock, 'the block service serves it');
    is($P->map_volume($sid, $nbd, $v5), $dev, 'map_volume gives the block device also with storpool-nbd (as RBD maps krbd)');
    ok($P->unmap_volume($sid, $scfg, $v5), 'unmap_volume');
    ok(!-e $dev, 'unmapped');
};

subtest 'rename_volume, rename_snapshot, volume_snapshot_delete' => sub {
    my $g5 = gid_of($v5);
    my $r = $P->rename_volume($scfg, $sid, $v5, 300);
    is($r, "$sid:vm-300-disk-0-sp-$g5.raw", 'rename_volume: same globalId, new owner');
    $v5 = ($r =~ /^[^:]+:(.+)$/)[0];
    is_deeply([ map { $_->{volid} } @{ $P->list_images($sid, $scfg, 300) } ], [$r], 'listed under VM 300');
    $P->rename_snapshot($scfg, $sid, $v0, 'snap1', 'snap2');
    is_deeply(snapshots_of(gid_of($v0)), ['snap2'], 'renamed');
    $P->volume_snapshot($scfg, $sid, $v0, 'snap3');
    $P->volume_snapshot_delete($scfg, $sid, $v0, 'snap3', 0);
    is_deeply(snapshots_of(gid_of($v0)), ['snap2'], 'snap3 deleted');
    eval { $P->volume_snapshot_delete($scfg, $sid, $v0, 'snap3', 0) };
    like($@, qr/no snapshot 'snap3'/, 'deleting it again fails');
};

subtest 'free_image' => sub {
    my $g0 = gid_of($v0);
    $P->free_image($sid, $scfg, $_) for $c200, $c201, $v0, $v5;
    is_deeply(snapshots_of($g0), [], "the volume's snapshots went with it");
    $P->free_image($sid, $scfg, $base, 1);
    is_deeply($P->list_images($sid, $scfg), [], 'nothing left');
    eval { $P->free_image($sid, $scfg, $v0) };
    like($@, qr/^storpool: VolumeDelete\/~\Q$g0\E: /, 'freeing it twice fails');
};

done_testing();
