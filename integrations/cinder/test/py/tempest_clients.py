"""tempest.lib's volume v3 clients through Keystone: every response is checked against
Cinder's published JSON schemas (tempest.lib.api_schema.response.volume)."""
import json
import os
import sys

from tempest.lib import auth, exceptions
from tempest.lib.services.volume.v3 import snapshots_client, volumes_client, types_client

ks = os.environ['KS_URL']
creds = auth.KeystoneV3Credentials(username=os.environ['OS_USER'], password=os.environ['OS_PW'], project_name=os.environ['OS_PROJECT'],
                                   user_domain_name='Default', project_domain_name='Default')
ap = auth.KeystoneV3AuthProvider(creds, ks + '/v3')
ap.set_auth()
vc = volumes_client.VolumesClient(ap, 'volumev3', 'RegionOne')
sc = snapshots_client.SnapshotsClient(ap, 'volumev3', 'RegionOne')
out = {}

v = vc.create_volume(size=1, name='tempest-vol', description='made by tempest', metadata={'k1': 'v1'})['volume']
vid = v['id']
out['created'] = {'status': v['status'], 'size': v['size'], 'name': v['name']}
v = vc.show_volume(vid)['volume']
out['shown'] = {'status': v['status'], 'size': v['size'], 'metadata': v['metadata'], 'tenant': v['os-vol-tenant-attr:tenant_id']}
out['listed'] = [x['id'] for x in vc.list_volumes()['volumes']].count(vid)
out['detailed'] = [x['id'] for x in vc.list_volumes(detail=True)['volumes']].count(vid)
vc.update_volume(vid, name='tempest-vol2')
vc.extend_volume(vid, new_size=2)
vc.create_volume_metadata(vid, {'k2': 'v2'})
out['metadata'] = vc.show_volume_metadata(vid)['metadata']
vc.reserve_volume(vid)
out['reserved'] = vc.show_volume(vid)['volume']['status']
vc.unreserve_volume(vid)
vc.attach_volume(vid, instance_uuid='6f2ae0d1-8f6f-4b61-9e0b-6d2ab3c6e0a1', mountpoint='/dev/vdb')
v = vc.show_volume(vid)['volume']
out['attached'] = {'status': v['status'], 'attachments': len(v['attachments']), 'device': v['attachments'][0]['device']}
vc.detach_volume(vid)
v = vc.show_volume(vid)['volume']
out['after'] = {'status': v['status'], 'size': v['size'], 'name': v['name']}

s = sc.create_snapshot(volume_id=vid, name='tempest-snap')['snapshot']
sid = s['id']
s = sc.show_snapshot(sid)['snapshot']
out['snapshot'] = {'status': s['status'], 'size': s['size'], 'volume_id': s['volume_id'] == vid, 'progress': s['os-extended-snapshot-attributes:progress']}
out['snapshots_listed'] = [x['id'] for x in sc.list_snapshots(detail=True)['snapshots']].count(sid)
sc.update_snapshot(sid, name='tempest-snap2')
c = vc.create_volume(size=2, snapshot_id=sid, name='tempest-clone')['volume']
out['clone'] = {'snapshot_id': c['snapshot_id'] == sid, 'size': c['size']}
try:
    vc.delete_volume(vid)
    out['delete_with_snapshot'] = 'accepted'
except exceptions.BadRequest as e:
    out['delete_with_snapshot'] = 'BadRequest'
vc.delete_volume(c['id'])
sc.delete_snapshot(sid)
sc.wait_for_resource_deletion(sid)
vc.delete_volume(vid)
vc.wait_for_resource_deletion(vid)
try:
    vc.show_volume(vid)
except exceptions.NotFound as e:
    out['not_found'] = e.resp.status
print(json.dumps(out))
