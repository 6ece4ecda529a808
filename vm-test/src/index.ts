export { ensureImage, initrdWithScript, defaultCacheDir, GUEST_PACKAGES, GUEST_MODULES, KERNEL_METAPACKAGE, type GuestImage, type BuildImageOptions } from './image.js';
export { runVm, selectAccel, type RunVmOptions, type VmResult, type Accel } from './vm.js';
export { newcArchive, type CpioEntry } from './cpio.js';
export { elfNeeded } from './elf.js';
