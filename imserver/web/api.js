// The HTTP API: JSON in and out, the login token as a bearer token. A failed call throws an
// ApiError carrying the server's own words ({"msg": ...}).

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

export class Api {
  constructor(token = null) {
    this.token = token;
  }

  async call(method, path, body) {
    const headers = {};
    if (this.token) headers.Authorization = `Bearer ${this.token}`;
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      throw new ApiError(0, 'The server cannot be reached. Check your connection.');
    }
    let json = null;
    try {
      json = await response.json();
    } catch {
      json = null;
    }
    if (!response.ok) {
      const said = json && json.msg ? json.msg : response.statusText;
      throw new ApiError(response.status, explain(response.status, said, response));
    }
    return json;
  }

  get(path) {
    return this.call('GET', path);
  }

  post(path, body = {}) {
    return this.call('POST', path, body);
  }

  delete(path) {
    return this.call('DELETE', path);
  }
}

// The server's message, with what it means for the person reading it.
function explain(status, said, response) {
  if (status === 429) {
    const after = response.headers.get('Retry-After');
    return after ? `${said}. Try again in ${after} s.` : `${said}. Try again later.`;
  }
  if (status === 401) return 'Your session has ended. Log in again.';
  return said;
}
