import type { RegularizerPlugin, RegularizerSpecificationVersion } from './contract.js';
import { ConfigError } from './errors.js';

/** The plugin contract versions this release of `@regstack/regularizer` can run, oldest first. */
export const SPECIFICATION_VERSIONS: readonly RegularizerSpecificationVersion[] = Object.freeze(['v1'] as const);

/**
 * Rejects a plugin that declares a contract version this release does not know, naming the plugin:
 * a plugin published against a later contract would otherwise fail somewhere inside a step. A plugin
 * that declares none is taken as v1, the contract before versions were declared.
 */
export function checkSpecificationVersion(plugin: RegularizerPlugin, field: string): void {
  const version: unknown = plugin.specificationVersion;
  if (version === undefined || (SPECIFICATION_VERSIONS as readonly unknown[]).includes(version)) return;
  throw new ConfigError(
    `${field}.specificationVersion`,
    `plugin '${plugin.name}' implements regstack plugin contract ${String(version)}, but this @regstack/regularizer ` +
      `runs ${SPECIFICATION_VERSIONS.join(', ')}; update @regstack/regularizer, or use a release of the plugin written for ${SPECIFICATION_VERSIONS.at(-1)}`,
  );
}
