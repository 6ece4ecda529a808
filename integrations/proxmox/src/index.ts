/** Where the plugin's files are (the plugin itself is Perl: lib/PVE/Storage/Custom/StorPoolPlugin.pm). */
import { fileURLToPath } from 'node:url';

export const PLUGIN_ROOT = fileURLToPath(new URL('..', import.meta.url));
export const PLUGIN_MODULE = fileURLToPath(new URL('../lib/PVE/Storage/Custom/StorPoolPlugin.pm', import.meta.url));
export const BUILD_DEB = fileURLToPath(new URL('../scripts/build-deb.sh', import.meta.url));
