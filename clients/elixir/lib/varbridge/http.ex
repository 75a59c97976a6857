defmodule VarBridge.HTTP do
  @moduledoc false
  # Unary calls in the Connect protocol with JSON: POST
  # /varbridge.v1.BridgeService/<Method>, a protobuf JSON body, 200 and the
  # response message, or another status and a Connect error object.

  alias VarBridge.{Error, JSON}

  @service "/varbridge.v1.BridgeService/"

  @spec call(String.t(), String.t() | nil, String.t(), map(), keyword()) ::
          {:ok, map()} | {:error, Error.t()}
  def call(url, token, method, body, opts \\ []) do
    timeout = Keyword.get(opts, :timeout, 15_000)

    headers =
      [
        {~c"connect-protocol-version", ~c"1"},
        {~c"connect-timeout-ms", Integer.to_charlist(timeout)}
      ] ++ auth(token)

    request =
      {to_charlist(url <> @service <> method), headers, ~c"application/json", JSON.encode!(body)}

    http_opts = [
      timeout: timeout + 1_000,
      connect_timeout: min(timeout, 5_000),
      autoredirect: false,
      ssl: Keyword.get(opts, :tls, [])
    ]

    case :httpc.request(
           :post,
           request,
           http_opts,
           [body_format: :binary],
           Keyword.get(opts, :profile, VarBridge.Application.profile())
         ) do
      {:ok, {{_, 200, _}, _headers, resp}} ->
        case JSON.decode(resp) do
          {:ok, msg} when is_map(msg) ->
            {:ok, msg}

          _ ->
            {:error,
             Error.local(
               :internal,
               nil,
               "#{method}: the server's answer is not JSON: #{inspect(resp)}"
             )}
        end

      {:ok, {{_, status, _}, _headers, resp}} ->
        {:error, Error.from_connect(status, resp)}

      {:error, reason} ->
        {:error, Error.transport(reason)}
    end
  end

  @doc false
  # The :httpc profile for a server: plain http shares the application's;
  # each https server and set of TLS options gets one of its own, since
  # httpc reuses a kept-alive connection by host and port alone, and a
  # connection verified with one client's options must not serve another's.
  def profile(_url, []), do: VarBridge.Application.profile()

  def profile(url, tls) do
    name = :"varbridge_tls_#{:erlang.phash2({url, tls})}"

    case :inets.start(:httpc, profile: name) do
      {:ok, _} -> :ok = :httpc.set_options([keep_alive_timeout: 30_000], name)
      {:error, {:already_started, _}} -> :ok
    end

    name
  end

  @doc false
  def auth(nil), do: []
  def auth(""), do: []
  def auth(token), do: [{~c"authorization", to_charlist("Bearer " <> token)}]
end
