export {
  StorpoolApi, encodePathArg, API_BASE_PATH, REQUEST_TIMEOUT_MS_DEFAULT, GET_RETRIES_DEFAULT, RETRY_DELAY_MS_DEFAULT,
  WAIT_TIMEOUT_MS_DEFAULT, type StorpoolApiOptions, type RawResponse, type HttpMethod,
} from './client.js';
export {
  loadConfig, parseIni, listDropIns, resolveConfigPath, endpointFromConfig, DEFAULT_CONFIG_PATH, DEFAULT_API_HOST,
  DEFAULT_API_PORT, ENV_OVERRIDES, type LoadConfigOptions, type LoadedConfig, type IniSections, type ApiEndpoint,
} from './config.js';
export { StorpoolApiError, StorpoolConnectionError, StorpoolConfigError, type StorpoolApiErrorInit } from './errors.js';
export type * from './types.js';
