"""openstacksdk's block_storage proxy through Keystone (catalog, version discovery, microversion)."""
import json
import os

import openstack

conn = openstack.connect(auth_url=os.environ['KS_URL'] + '/v3', username=os.environ['OS_USER'], password=os.environ['OS_PW'],
                         project_name=os.environ['OS_PROJECT'], user_domain_name='Default', project_domain_name='Default',
                         region_name='RegionOne', block_storage_api_version='3')
bs = conn.block_storage
out = {}
v = bs.create_volume(size=1, name='sdk-vol', description='sdk')
v = bs.wait_for_status(v, status='available', wait=60)
out['created'] = {'status': v.status, 'size': v.size, 'name': v.name}
out['listed'] = [x.id for x in bs.volumes()].count(v.id)
bs.extend_volume(v, 3)
v = bs.get_volume(v.id)
out['extended'] = v.size
s = bs.create_snapshot(volume_id=v.id, name='sdk-snap')
s = bs.wait_for_status(s, status='available', wait=60)
out['snapshot'] = {'status': s.status, 'size': s.size}
out['snapshots'] = [x.id for x in bs.snapshots()].count(s.id)
out['types'] = sorted(t.name for t in bs.types())
bs.delete_snapshot(s)
bs.wait_for_delete(s, wait=60)
bs.delete_volume(v)
bs.wait_for_delete(v, wait=60)
out['gone'] = bs.find_volume(v.id) is None
print(json.dumps(out))
