"""python3-cs's signature of each request given as JSON on stdin: [{key, secret, command, params, expires}]."""
import json
import sys

from cs.client import CloudStack, transform

out = []
for r in json.load(sys.stdin):
    c = CloudStack(endpoint='http://unused/client/api', key=r['key'], secret=r['secret'])
    kind, params = c._prepare_request(r['command'], expires=r['expires'], signatureVersion='3', **r['params'])
    transform(params)
    c._sign(params)
    out.append(params['signature'])
print(json.dumps(out))
