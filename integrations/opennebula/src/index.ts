export { runAction, main } from './main.js';
export { driverEnv, names, sourceVolume, splitHostPath, diskIds, type DriverEnv } from './env.js';
export { parseDocument, decodeDocument, text, nodes, type XmlNode } from './xml.js';
