// The server's HTTP API, called with the admin key (Authorization: Convex <key>).

import { fromConvex } from "./values.js";

/** The admin key was refused (HTTP 401). */
export class AuthError extends Error {}

/** A request refused before any function ran ({code, message}), or a network failure. */
export class RequestError extends Error {
  constructor(message, status = 0, code = "") {
    super(message);
    this.status = status;
    this.code = code;
  }
}

async function refusal(response) {
  let message = `${response.status} ${response.statusText}`;
  let code = "";
  try {
    const body = await response.json();
    if (body && body.message) message = body.message;
    if (body && body.code) code = body.code;
  } catch {
    // not JSON: the status line says it
  }
  if (response.status === 401) return new AuthError(message);
  return new RequestError(message, response.status, code);
}

export class Api {
  constructor(adminKey) {
    this.adminKey = adminKey;
  }

  headers(extra = {}) {
    return { Authorization: `Convex ${this.adminKey}`, ...extra };
  }

  async fetch(url, options = {}) {
    let response;
    try {
      response = await fetch(url, { ...options, headers: this.headers(options.headers || {}) });
    } catch (err) {
      if (err && err.name === "AbortError") throw err;
      throw new RequestError(`The server did not answer (${err && err.message ? err.message : err})`);
    }
    if (!response.ok) throw await refusal(response);
    return response;
  }

  /**
   * Run a function: `kind` is query, mutation or action. Resolves to
   * {status: "success", value, logLines} or {status: "error", errorMessage, errorData?,
   * logLines}; rejects with AuthError or RequestError when no function ran.
   */
  async run(kind, path, args = {}) {
    const response = await this.fetch(`/api/${kind}`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ path, args, format: "convex_encoded_json" }),
    });
    const body = await response.json();
    if (body.status === "success") body.value = fromConvex(body.value);
    if (body.errorData !== undefined) body.errorData = fromConvex(body.errorData);
    return body;
  }

  /** A query's value (a function error is thrown as a RequestError). */
  async query(path, args = {}) {
    const body = await this.run("query", path, args);
    if (body.status !== "success") throw new RequestError(body.errorMessage || "the query failed");
    return body.value;
  }

  async json(url, options = {}) {
    const response = await this.fetch(url, options);
    return response.json();
  }

  async updateEnvironmentVariables(changes) {
    await this.fetch("/api/update_environment_variables", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ changes }),
    });
  }
}
