// TypeScript view of the tamma orchestrator protocol's wire types (HTTP/JSON under /api/v1).
// docs/openapi.yaml is the schema, docs/protocol.md the prose, src/protocol/wire.h the C++ side;
// tests/orchestrator/wire_schema_test.cc checks that every interface here has exactly the
// properties of the schema of the same name, with the same optionality.
//
// Durations are milliseconds from the moment the message was produced (never absolute times);
// the *At strings are RFC 3339 UTC times, shown to admins only.
//
// Unknown members are ignored, by the orchestrator and by clients (forward compatibility): a
// reader must skip members it does not know, and the server sends only the ones declared here.
// A member name twice in one object is refused with 400 invalid_field.

export interface Platform {
  os?: string;
  arch?: string;
  kernel?: string;
}

export interface WorkerResources {
  memoryBytes?: number;
  cpus?: number;
  diskBytes?: number;
}

export interface Capabilities {
  /** a task is offered only when its type is listed */
  taskTypes: string[];
  /** must cover every label a task requires, with the same value */
  labels?: Record<string, string>;
  /** tasks the worker runs at once */
  slots?: number;
  resources?: WorkerResources;
  version?: string;
  platform?: Platform;
}

export interface RegisterRequest {
  capabilities: Capabilities;
}

export interface RegisterResponse {
  workerId: string;
  /** the per-worker bearer token, shown once; the server keeps only its SHA-256 */
  token: string;
  heartbeatIntervalMs: number;
  leaseTtlMs: number;
  pollTimeoutMs: number;
}

export interface LeaseRef {
  taskId: string;
  attempt: number;
  leaseId: string;
}

export interface TaskAttemptRef {
  taskId: string;
  attempt: number;
}

export interface HeartbeatRequest {
  /** every lease the worker holds; leases not listed are not renewed */
  leases?: LeaseRef[];
  /** the worker takes no new task */
  draining?: boolean;
  /** set while the worker stands down after host failures: why (at most 1024 bytes) */
  unhealthy?: string;
}

export interface HeartbeatResponse {
  /** stop these, then report them (complete with status cancelled, or fail) */
  cancel: TaskAttemptRef[];
  /** stop these and report nothing more about them */
  lostLeases: TaskAttemptRef[];
  /** the orchestrator asks the worker to take no new task */
  drain: boolean;
  /** every renewed lease lasts this long from now */
  leaseTtlMs: number;
}

export interface PollRequest {
  /** capped by the server's poll timeout; 0 answers at once */
  waitMs?: number;
}

export interface Assignment {
  task: TaskSpec;
  taskId: string;
  attempt: number;
  leaseId: string;
  /** a duration from now, never an absolute time */
  leaseTtlMs: number;
}

export interface StartedRequest {
  attempt: number;
  leaseId: string;
}

export interface ProgressRequest {
  attempt: number;
  leaseId: string;
  percent?: number;
  step?: string;
  message?: string;
}

export interface LogAppendRequest {
  attempt: number;
  leaseId: string;
  /** byte offset in this attempt's log where data starts */
  offset: number;
  /** UTF-8 text; send binary output with the raw form */
  data: string;
}

export interface LogAppendResponse {
  /** bytes of this attempt's log now held */
  length: number;
}

export interface TaskFailure {
  code: string;
  message: string;
  retryable?: boolean;
}

/** the result document (docs/task-spec.md); only status is checked here */
export interface TaskResult {
  status: "succeeded" | "failed" | "timeout" | "limit_exceeded" | "cancelled" | "error";
  [member: string]: unknown;
}

export interface CompleteRequest {
  attempt: number;
  leaseId: string;
  result: TaskResult;
  /** the attempt's log as the worker sent it; while the orchestrator holds less: 409 log_incomplete */
  logBytes?: number;
  /** output the worker could not deliver at all; kept on the task */
  logMissingBytes?: number;
  /** the attempt's last progress when the worker did not send it (sent every 500 ms: a shorter task sends none) */
  progress?: Progress;
  /** hand back this worker's next task, claimed in this report's transaction, if one is queued for it now */
  next?: boolean;
}

export interface FailRequest {
  attempt: number;
  leaseId: string;
  error: TaskFailure;
  result?: TaskResult;
  /** the attempt's log as the worker sent it; while the orchestrator holds less: 409 log_incomplete */
  logBytes?: number;
  /** output the worker could not deliver at all; kept on the task */
  logMissingBytes?: number;
  /** as CompleteRequest.progress */
  progress?: Progress;
  /** as CompleteRequest.next */
  next?: boolean;
}

export interface FencedWriteResponse {
  state: TaskState;
}

/** the answer to complete and fail */
export interface ReportResponse {
  state: TaskState;
  /** the worker's next task, when the report asked (next: true) and one was queued for it */
  next?: Assignment;
}

export interface ArtifactInfo {
  /** the workspace-relative path ("dist/app.tgz"): segments of [A-Za-z0-9._-], not . or .., each at most 200 characters, 1024 in all */
  name: string;
  attempt: number;
  size: number;
  sha256: string;
}

/** a task specification as docs/task-spec.md defines it; the orchestrator sets id */
export interface TaskSpec {
  id?: string;
  type: string;
  [member: string]: unknown;
}

export interface SubmitRequest {
  task: TaskSpec;
  /** higher first, FIFO within one priority */
  priority?: number;
  /** re-runs allowed after a lost lease or a retryable failure */
  maxRetries?: number;
  /** labels a worker must offer to get this task */
  labels?: Record<string, string>;
  /** the same key returns the same task (also the Idempotency-Key header) */
  idempotencyKey?: string;
}

export interface Progress {
  percent?: number;
  step?: string;
  message?: string;
}

export type TaskState = "queued" | "running" | "succeeded" | "failed" | "retry_wait" | "dead" | "cancel_requested" | "cancelled";

export interface TaskView {
  id: string;
  type: string;
  state: TaskState;
  /** 0 until first handed out */
  attempt: number;
  maxRetries: number;
  priority: number;
  labels: Record<string, string>;
  workerId?: string;
  idempotencyKey?: string;
  progress: Progress;
  result?: TaskResult;
  error?: TaskFailure;
  /** while retry_wait: how long until queued again */
  retryInMs?: number;
  logLength: number;
  /** output of the last reported attempt its worker could not deliver (absent when none) */
  logMissingBytes?: number;
  artifacts: ArtifactInfo[];
  createdAt: string;
  updatedAt: string;
  startedAt?: string;
  finishedAt?: string;
  task: TaskSpec;
}

export interface TaskList {
  tasks: TaskView[];
}

export type WorkerState = "online" | "draining" | "offline" | "gone";

export interface WorkerView {
  id: string;
  state: WorkerState;
  capabilities: Capabilities;
  leases: LeaseRef[];
  registeredAt: string;
  lastSeenAt: string;
  lastSeenAgoMs: number;
  /** what the worker last said is wrong with its host (absent when nothing) */
  unhealthy?: string;
}

export interface WorkerList {
  workers: WorkerView[];
}

export interface DrainResponse {
  workerId: string;
  drain: boolean;
}

// The audit trail (GET /api/v1/audit): one record per operation that changed state, written in
// the operation's own transaction. Never a token, a token hash, a lease id, a task spec, a log
// or an error message.

/** who asked: the admin, a worker, a client registering a worker, or the orchestrator itself */
export type ActorKind = "admin" | "worker" | "registration" | "orchestrator";

export type AuditAction = "register" | "unregister" | "drain" | "submit" | "cancel" | "claim" | "claim_released" | "claim_unacknowledged" | "started" | "artifact" | "complete" | "fail" | "lease_expired" | "lease_revoked" | "lease_grace" | "retry_promoted";

export interface AuditActor {
  kind: ActorKind;
  /** the worker's id, for kind worker */
  id?: string;
  /** the client's ip:port as the orchestrator's socket saw it; absent for the orchestrator */
  address?: string;
}

/** a few plain facts; which members depends on the action */
export interface AuditDetail {
  /** the task's state after the operation */
  state?: TaskState;
  /** submit */
  type?: string;
  priority?: number;
  maxRetries?: number;
  /** register */
  slots?: number;
  taskTypes?: string[];
  /** complete: the result's status */
  status?: "succeeded" | "failed" | "timeout" | "limit_exceeded" | "cancelled" | "error";
  /** fail: the error code (never its message) and whether it may be retried */
  code?: string;
  retryable?: boolean;
  /** artifact: its name, size and SHA-256 (never where it is stored) */
  name?: string;
  size?: number;
  sha256?: string;
  /** lease_grace: how many leases got one more TTL */
  leases?: number;
}

export interface AuditRecord {
  /** ascending in the order the records were written; there may be gaps */
  seq: number;
  /** RFC 3339, by the database clock */
  at: string;
  actor: AuditActor;
  action: AuditAction;
  taskId?: string;
  attempt?: number;
  /** the worker the operation concerns: the one a task went to, drained, unregistered... */
  workerId?: string;
  detail: AuditDetail;
}

export interface AuditList {
  /** oldest first */
  records: AuditRecord[];
  /** present when the page is full: ask again with ?after=next */
  next?: number;
}

export interface ValidationProblem {
  path: string;
  message: string;
}

export interface ErrorDetail {
  /** stable and machine-readable; docs/protocol.md lists every code with its status and whether to retry */
  code: string;
  message: string;
  /** the JSON path (or query parameter) at fault */
  field?: string;
  /** every task spec problem */
  problems?: ValidationProblem[];
  state?: TaskState;
  attempt?: number;
  /** the log's current length, for 409 and 416 on log appends */
  length?: number;
}

export interface ErrorBody {
  error: ErrorDetail;
}

export interface HealthStatus {
  status: "ok" | "ready" | "shutting_down" | "storage_failing" | "storage_stalled" | "core_stalled";
  message?: string;
}
