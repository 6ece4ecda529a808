"""python-cinderclient's v3 Client (noauth or Keystone): volumes, actions, snapshots, the
attachments API (3.27+, os-complete at 3.44) and the microversion negotiated with the server."""
import json
import os

from cinderclient import api_versions, client
from keystoneauth1 import session
from keystoneauth1.identity import v3

if os.environ.get('KS_URL'):
    auth = v3.Password(auth_url=os.environ['KS_URL'] + '/v3', username=os.environ['OS_USER'], password=os.environ['OS_PW'],
                       project_name=os.environ['OS_PROJECT'], user_domain_name='Default', project_domain_name='Default')
    sess = session.Session(auth=auth)
else:
    from cinderclient.contrib import noauth
    sess = session.Session(auth=noauth.CinderNoAuthPlugin(os.environ['USER_ID'], os.environ['PROJECT_ID'], endpoint=os.environ['ENDPOINT']))
c0 = client.Client('3.0', session=sess)
server_max = api_versions.get_highest_version(c0)
c = client.Client(server_max.get_string(), session=sess)
out = {'max': server_max.get_string()}
v = c.volumes.create(1, name='cc-vol', metadata={'a': 'b'})
out['created'] = {'status': v.status, 'size': v.size}
v = c.volumes.get(v.id)
out['type'] = v.volume_type
out['type_id_ok'] = getattr(v, 'volume_type_id', None) is not None
c.volumes.extend(v, 2)
c.volumes.update(v, name='cc-vol2', description='renamed')
v = c.volumes.get(v.id)
out['updated'] = {'name': v.name, 'size': v.size, 'description': v.description}
out['found'] = [x.id for x in c.volumes.list(search_opts={'name': 'cc-vol2'})] == [v.id]
# the pre-3.27 attach flow, as Nova did it
connector = {'host': os.environ['CONNECTOR_HOST'], 'initiator': 'iqn.1993-08.org.debian:01:abc', 'ip': '127.0.0.1'}
c.volumes.reserve(v)
info = c.volumes.initialize_connection(v, connector)
out['legacy_connection'] = info
c.volumes.attach(v, '6f2ae0d1-8f6f-4b61-9e0b-6d2ab3c6e0a1', '/dev/vdb')
out['legacy_attached'] = c.volumes.get(v.id).status
c.volumes.begin_detaching(v)
c.volumes.terminate_connection(v, connector)
c.volumes.detach(v)
out['legacy_detached'] = c.volumes.get(v.id).status
# the attachments API
a = c.attachments.create(v.id, connector, '6f2ae0d1-8f6f-4b61-9e0b-6d2ab3c6e0a2', mode='rw')  # create returns a dict
ci = a['connection_info']
out['attachment'] = {'status': a['status'], 'driver': ci['driver_volume_type'], 'volume': ci['data']['volume'] == v.id, 'client_id': ci['data']['client_id']}
a = c.attachments.update(a['id'], connector)
out['attachment_updated'] = a.status
c.attachments.complete(a.id)
out['in_use'] = c.volumes.get(v.id).status
out['attachment_listed'] = [x.id for x in c.attachments.list()].count(a.id)
c.attachments.delete(a.id)
out['available'] = c.volumes.get(v.id).status
s = c.volume_snapshots.create(v.id, name='cc-snap')
out['snapshot'] = {'status': s.status, 'size': s.size}
clone = c.volumes.create(2, snapshot_id=s.id, name='cc-from-snap')
out['from_snapshot'] = clone.snapshot_id == s.id
src_clone = c.volumes.create(2, source_volid=v.id, name='cc-clone')
out['clone'] = src_clone.source_volid == v.id
out['types'] = sorted(t.name for t in c.volume_types.list())
for x in (clone, src_clone):
    c.volumes.delete(x)
c.volume_snapshots.delete(s)
c.volumes.delete(v)
try:
    c.volumes.get(v.id)
except Exception as e:  # cinderclient.exceptions.NotFound
    out['not_found'] = type(e).__name__ + ':' + str(getattr(e, 'code', ''))
print(json.dumps(out))
