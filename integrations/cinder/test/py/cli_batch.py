"""Runs several `openstack` (openstackclient.shell.main) or `cinder` (cinderclient.shell's
OpenStackCinderShell().main) commands, the CLIs' own entry points, in one Python process, so that
the interpreter and plugin start-up is paid once. argv[1]: openstack or cinder. Input on stdin: a
JSON list of argument lists; output: a JSON list of {argv, rc, stdout, stderr}. Stops at the first
failing command."""
import contextlib
import io
import json
import sys


def run_openstack(argv):
    from openstackclient import shell
    return shell.main(argv)


def run_cinder(argv):
    from cinderclient import shell
    try:
        shell.OpenStackCinderShell().main(argv)
        return 0
    except Exception as e:  # what cinderclient.shell.main prints before exiting 1
        print('ERROR: %s' % e, file=sys.stderr)
        return 1


main = {'openstack': run_openstack, 'cinder': run_cinder}[sys.argv[1]]

out = []
for argv in json.load(sys.stdin):
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try:
            rc = main(argv)
        except SystemExit as x:
            rc = x.code if isinstance(x.code, int) else 1
    out.append({'argv': argv, 'rc': rc, 'stdout': o.getvalue(), 'stderr': e.getvalue()})
    if rc != 0:
        break
print(json.dumps(out))
