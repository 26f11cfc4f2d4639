// Types of wsedge.js, the wsedge browser client.

export declare const SUBPROTOCOL: 'wsedge.v1.json';

export declare const State: Readonly<{
  Disconnected: 'disconnected';
  Connecting: 'connecting';
  Connected: 'connected';
  Closed: 'closed';
}>;
export type StateName = 'disconnected' | 'connecting' | 'connected' | 'closed';

export declare const ErrorCode: Readonly<{
  Closed: 'closed';
  QueueFull: 'queue_full';
  Timeout: 'timeout';
  ConnectionLost: 'connection_lost';
  Offline: 'offline';
  BadChannel: 'bad_channel';
  AlreadySubscribed: 'already_subscribed';
}>;

/** A server error reply (numeric code, docs/PROTOCOL.md) or a client-side failure (string code). */
export declare class WsedgeError extends Error {
  constructor(code: number | string, message: string);
  readonly code: number | string;
}

export interface Backoff {
  /** Ceiling of the first attempt's wait, ms (default 500). */
  min: number;
  /** Ceiling of any wait, ms (default 20000). */
  max: number;
  /** Growth of the ceiling per attempt (default 2). */
  factor: number;
}

/** Attempt n's wait in ms: u · min(max, min·factor^n), u uniform in [0, 1). */
export declare function backoffDelay(attempt: number, backoff: Backoff, u: number): number;

export interface ClientOptions {
  /** Supplies the JWT before every connection and when the server asks for a refresh. */
  getToken?: () => string | Promise<string>;
  backoff?: Partial<Backoff>;
  /** A connection up this long (ms) resets the backoff (default 5000). */
  healthyAfter?: number;
  /** Silence (ms) after which the connection counts as dead (default 50000); a ping goes out at half. */
  readTimeout?: number;
  /** Bound (ms) on a command's reply, queue wait included (default 10000). */
  commandTimeout?: number;
  /** Publishes that may wait while disconnected (default 256; 0: reject at once). */
  offlineQueue?: number;
  /** Random source of the jitter (default Math.random). */
  random?: () => number;
  /** WebSocket implementation (default globalThis.WebSocket). */
  WebSocket?: typeof WebSocket;
}

export interface Position {
  offset: number;
  epoch: string;
}

export interface Publication<T = unknown> {
  channel: string;
  /** 0 on a channel without history. */
  offset: number;
  /** '' on a channel without history. */
  epoch: string;
  data: T;
}

export interface StateEvent {
  from: StateName;
  to: StateName;
  reason: string;
  /** The disconnect push's code, or the close code. */
  code?: number;
  /** Entering 'disconnected': ms until the next attempt. */
  delay?: number;
}

export interface SubscribeOptions {
  /** Missed publications could not all be recovered: refetch state. */
  onUnrecovered?: (pos: Position) => void;
  /** The server ended or refused the subscription after it was confirmed. */
  onEnd?: (err: WsedgeError) => void;
}

export declare class Subscription<T = unknown> {
  readonly channel: string;
  /** Resolves when the server confirmed the subscription; rejects on a refusal. */
  readonly ready: Promise<Subscription<T>>;
  readonly position: Position;
  unsubscribe(): Promise<void>;
}

export declare class Client {
  constructor(url: string, options?: ClientOptions);
  readonly state: StateName;
  on(event: 'state', fn: (ev: StateEvent) => void): this;
  off(event: 'state', fn: (ev: StateEvent) => void): this;
  connect(): this;
  subscribe<T = unknown>(channel: string, handler: (pub: Publication<T>) => void, options?: SubscribeOptions): Subscription<T>;
  publish(channel: string, data: unknown): Promise<Partial<Position>>;
  close(): void;
}
