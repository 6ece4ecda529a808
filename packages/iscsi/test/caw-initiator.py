#!/usr/bin/env python3
"""
A libiscsi initiator (through ctypes: Debian ships libiscsi7 but no Python binding) that takes
commands on stdin, one per line, and answers each with one JSON line on stdout:

  caw LBA OLD NEW [BLOCKS]
                    COMPARE AND WRITE of BLOCKS (default 1) 512-byte blocks: compare record(OLD)
                    in each, write record(NEW)
                    -> {"status": 0} or {"status": 2, "key": 14, "asc": 29, "ascq": 0}
  read LBA          READ(16) of one block -> {"value": N, "uniform": true}
  incr LBA WINS     increments the counter at LBA by COMPARE AND WRITE until it won WINS times
                    (re-reading after each miscompare) -> {"won": WINS, "lost": L}
  quit

A record is the u32 value repeated over the block, so a torn or mixed block shows.
Usage: caw-initiator.py INITIATOR_IQN PORTAL TARGET_IQN
"""
import ctypes
import json
import struct
import sys

BLOCK = 512
STATUS_GOOD = 0
ISCSI_SESSION_NORMAL = 2
ISCSI_HEADER_DIGEST_NONE = 0
# struct scsi_task (libiscsi 1.19, x86_64): int status at 0 ... struct scsi_sense at 48
# { unsigned char error_type; enum key (52); int ascq (56); bit fields, bit_pointer and
# field_pointer packed in 60..63 }, struct scsi_data datain at 64 { int size (64); data (72) }.
# read() checks the layout: one block read must show datain.size 512.
TASK_SENSE_KEY = 52
TASK_SENSE_ASCQ = 56
TASK_DATAIN_SIZE = 64
TASK_DATAIN_DATA = 72

lib = ctypes.CDLL('libiscsi.so.7')
lib.iscsi_create_context.restype = ctypes.c_void_p
lib.iscsi_create_context.argtypes = [ctypes.c_char_p]
lib.iscsi_set_targetname.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.iscsi_set_session_type.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.iscsi_set_header_digest.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.iscsi_full_connect_sync.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
lib.iscsi_get_error.restype = ctypes.c_char_p
lib.iscsi_get_error.argtypes = [ctypes.c_void_p]
# (iscsi, lun, lba, data, datalen, blocksize, wrprotect, dpo, fua, fua_nv, group): a build
# without fua_nv takes the zero as its group number and ignores the extra argument.
lib.iscsi_compareandwrite_sync.restype = ctypes.c_void_p
lib.iscsi_compareandwrite_sync.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_char_p, ctypes.c_uint32, ctypes.c_int] + [ctypes.c_int] * 5
lib.iscsi_read16_sync.restype = ctypes.c_void_p
lib.iscsi_read16_sync.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_uint64, ctypes.c_uint32, ctypes.c_int] + [ctypes.c_int] * 5
lib.scsi_free_scsi_task.argtypes = [ctypes.c_void_p]
lib.iscsi_logout_sync.argtypes = [ctypes.c_void_p]
lib.iscsi_destroy_context.argtypes = [ctypes.c_void_p]


def record(value):
    return struct.pack('<I', value) * (BLOCK // 4)


def int_at(task, offset):
    return ctypes.c_int.from_address(task + offset).value


class Initiator:
    def __init__(self, initiator, portal, target):
        self.ctx = lib.iscsi_create_context(initiator.encode())
        if not self.ctx:
            raise SystemExit('iscsi_create_context failed')
        lib.iscsi_set_targetname(self.ctx, target.encode())
        lib.iscsi_set_session_type(self.ctx, ISCSI_SESSION_NORMAL)
        lib.iscsi_set_header_digest(self.ctx, ISCSI_HEADER_DIGEST_NONE)
        if lib.iscsi_full_connect_sync(self.ctx, portal.encode(), 0) != 0:
            raise SystemExit('login to %s failed: %s' % (portal, lib.iscsi_get_error(self.ctx).decode()))

    def caw(self, lba, old, new, blocks=1):
        data = record(old) * blocks + record(new) * blocks
        task = lib.iscsi_compareandwrite_sync(self.ctx, 0, lba, data, len(data), BLOCK, 0, 0, 0, 0, 0)
        if not task:
            raise SystemExit('COMPARE AND WRITE failed: %s' % lib.iscsi_get_error(self.ctx).decode())
        try:
            status = int_at(task, 0)
            if status == STATUS_GOOD:
                return {'status': status}
            ascq = int_at(task, TASK_SENSE_ASCQ)
            return {'status': status, 'key': int_at(task, TASK_SENSE_KEY), 'asc': ascq >> 8, 'ascq': ascq & 0xff}
        finally:
            lib.scsi_free_scsi_task(task)

    def read(self, lba):
        task = lib.iscsi_read16_sync(self.ctx, 0, lba, BLOCK, BLOCK, 0, 0, 0, 0, 0)
        if not task:
            raise SystemExit('READ(16) failed: %s' % lib.iscsi_get_error(self.ctx).decode())
        try:
            if int_at(task, 0) != STATUS_GOOD:
                raise SystemExit('READ(16) status %d' % int_at(task, 0))
            # The layout check: a READ of one block must show 512 bytes of Data-In.
            if int_at(task, TASK_DATAIN_SIZE) != BLOCK:
                raise SystemExit('unexpected struct scsi_task layout (datain.size %d)' % int_at(task, TASK_DATAIN_SIZE))
            pointer = ctypes.c_void_p.from_address(task + TASK_DATAIN_DATA).value
            block = ctypes.string_at(pointer, BLOCK)
            value = struct.unpack_from('<I', block)[0]
            return {'value': value, 'uniform': block == record(value)}
        finally:
            lib.scsi_free_scsi_task(task)

    def incr(self, lba, wins):
        won = lost = 0
        seen = self.read(lba)['value']
        while won < wins:
            r = self.caw(lba, seen, seen + 1)
            if r['status'] == STATUS_GOOD:
                won += 1
                seen += 1
            elif r.get('key') == 0x0E:
                lost += 1
                seen = self.read(lba)['value']
            else:
                raise SystemExit('COMPARE AND WRITE: unexpected result %r' % r)
        return {'won': won, 'lost': lost}

    def close(self):
        lib.iscsi_logout_sync(self.ctx)
        lib.iscsi_destroy_context(self.ctx)


def main():
    initiator = Initiator(*sys.argv[1:4])
    print(json.dumps({'ready': True}), flush=True)
    for line in sys.stdin:
        words = line.split()
        if not words or words[0] == 'quit':
            break
        args = [int(w) for w in words[1:]]
        result = getattr(initiator, words[0])(*args)
        print(json.dumps(result), flush=True)
    initiator.close()


if __name__ == '__main__':
    main()
