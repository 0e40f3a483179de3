import type { LookupAddress } from 'node:dns';
import { lookup as dnsLookup } from 'node:dns/promises';
import { BlockList, isIP } from 'node:net';
import { AppError } from './errors.ts';

/** Resolves a hostname to every address it has (injectable for tests). */
export type Resolver = (hostname: string) => Promise<LookupAddress[]>;

const systemResolver: Resolver = (hostname) => dnsLookup(hostname, { all: true, verbatim: true });

/**
 * Address ranges a webhook must never reach (SSRF): loopback, private, link-local
 * (cloud metadata), CGNAT, ULA, multicast, reserved and documentation ranges.
 */
const blocked = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8],
  ['10.0.0.0', 8],
  ['100.64.0.0', 10],
  ['127.0.0.0', 8],
  ['169.254.0.0', 16],
  ['172.16.0.0', 12],
  ['192.0.0.0', 24],
  ['192.0.2.0', 24],
  ['192.88.99.0', 24],
  ['192.168.0.0', 16],
  ['198.18.0.0', 15],
  ['198.51.100.0', 24],
  ['203.0.113.0', 24],
  ['224.0.0.0', 4],
  ['240.0.0.0', 4],
] as const) {
  blocked.addSubnet(net, prefix, 'ipv4');
}
for (const [net, prefix] of [
  ['::', 128],
  ['::1', 128],
  ['64:ff9b::', 96],
  ['100::', 64],
  ['2001:db8::', 32],
  ['fc00::', 7],
  ['fe80::', 10],
  ['fec0::', 10],
  ['ff00::', 8],
] as const) {
  blocked.addSubnet(net, prefix, 'ipv6');
}

/** True for an address on the public internet. */
export function isPublicAddress(address: string): boolean {
  const family = isIP(address);
  if (family === 4) return !blocked.check(address, 'ipv4');
  if (family !== 6) return false;
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(address);
  if (mapped?.[1]) return isPublicAddress(mapped[1]);
  // The rest of ::ffff:0:0/96 (hex-spelled IPv4-mapped) and IPv4-compatible forms.
  if (/^::ffff:/i.test(address)) return false;
  return !blocked.check(address, 'ipv6');
}

function refused(message: string): AppError {
  return new AppError('validation_error', message, {
    param: 'url',
    details: { code: 'webhook_url_refused' },
  });
}

/**
 * Where webhooks may go: https to public addresses, or any scheme (http too) to the
 * hosts the operator allowed (`REELPOSTLY_WEBHOOK_ALLOW_HOSTS`, for development and
 * tests). Checked when an endpoint is saved AND on every connection (`lookup`), so a
 * DNS answer that changes after validation (rebinding) is refused too.
 */
export class WebhookUrlPolicy {
  readonly #allowHosts: ReadonlySet<string>;
  readonly #resolve: Resolver;

  constructor(options: { allowHosts: readonly string[]; resolver?: Resolver }) {
    this.#allowHosts = new Set(options.allowHosts.map((host) => host.toLowerCase()));
    this.#resolve = options.resolver ?? systemResolver;
  }

  /** Parses and vets a webhook URL; AppError `validation_error` saying why not. */
  async check(raw: string): Promise<URL> {
    const url = this.parse(raw);
    if (!this.isAllowedHost(url.hostname)) await this.publicAddresses(url.hostname);
    return url;
  }

  /** The syntactic part of `check` (no DNS). */
  parse(raw: string): URL {
    let url: URL;
    try {
      url = new URL(raw);
    } catch {
      throw refused(`Invalid webhook URL: ${raw}`);
    }
    if (url.username || url.password) throw refused('Webhook URLs must not carry credentials');
    if (url.protocol !== 'https:' && url.protocol !== 'http:') {
      throw refused('Webhook URLs must use https');
    }
    if (url.protocol === 'http:' && !this.isAllowedHost(url.hostname)) {
      throw refused('Webhook URLs must use https');
    }
    if (raw.length > 2048) throw refused('Webhook URLs are at most 2048 characters');
    return url;
  }

  isAllowedHost(hostname: string): boolean {
    return this.#allowHosts.has(bare(hostname).toLowerCase());
  }

  /** Every address of `hostname`, all public, or AppError `validation_error`. */
  async publicAddresses(hostname: string): Promise<LookupAddress[]> {
    const host = bare(hostname);
    let addresses: LookupAddress[];
    if (isIP(host)) {
      addresses = [{ address: host, family: isIP(host) }];
    } else {
      try {
        addresses = await this.#resolve(host);
      } catch {
        throw refused(`Webhook host does not resolve: ${host}`);
      }
    }
    if (addresses.length === 0) throw refused(`Webhook host does not resolve: ${host}`);
    // One private answer is enough to refuse: the connection could pick that one.
    if (!addresses.every((entry) => isPublicAddress(entry.address))) {
      throw refused(`Webhook host ${host} resolves to a non-public address`);
    }
    return addresses;
  }

  /**
   * A `lookup` for `http(s).request` that only ever connects to vetted addresses
   * (allowed hosts resolve normally).
   */
  readonly lookup = (
    hostname: string,
    options: { all?: boolean },
    callback: (
      error: NodeJS.ErrnoException | null,
      address: string | LookupAddress[],
      family?: number,
    ) => void,
  ): void => {
    const resolved = this.isAllowedHost(hostname)
      ? this.#resolve(hostname)
      : this.publicAddresses(hostname);
    resolved.then(
      (addresses) => {
        if (options.all) return callback(null, addresses);
        const [first] = addresses as [LookupAddress];
        return callback(null, first.address, first.family);
      },
      (error: unknown) => callback(error as NodeJS.ErrnoException, ''),
    );
  };
}

/** `[::1]` as URL.hostname spells it, without the brackets. */
function bare(hostname: string): string {
  return hostname.startsWith('[') && hostname.endsWith(']') ? hostname.slice(1, -1) : hostname;
}
