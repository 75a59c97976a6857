defmodule VarBridge.Error do
  @moduledoc """
  A failed call: `{:error, %VarBridge.Error{}}`.

    * `code`: the Connect code as an atom (`:not_found`, `:invalid_argument`,
      `:failed_precondition`, `:unavailable`, ...).
    * `reason`: the server's `google.rpc.ErrorInfo` reason as an atom
      (`:variable_not_found`, `:constraint_violation`, `:version_conflict`,
      ... as in the proto's `ErrorReason` without its prefix), nil when the
      error carries none (a transport failure, for one). A reason this client
      does not know stays a string.
    * `message`: the server's text, for people; match on `code` and `reason`.
    * `details`: the ErrorInfo metadata (for a constraint violation
      `"variable"`, `"constraint"`, `"value"`; for a version conflict
      `"expected_version"`, `"actual_version"`), string keys and values.

  Errors are read from the Connect error's structured details, never from
  the message text.
  """
  defexception [:code, :reason, :message, details: %{}]

  @type t :: %__MODULE__{
          code: atom(),
          reason: atom() | String.t() | nil,
          message: String.t(),
          details: %{optional(String.t()) => String.t()}
        }

  @codes ~w(canceled unknown invalid_argument deadline_exceeded not_found already_exists
            permission_denied resource_exhausted failed_precondition aborted out_of_range
            unimplemented internal unavailable data_loss unauthenticated)
  @code_atoms Map.new(@codes, &{&1, String.to_atom(&1)})

  @reasons ~w(SESSION_NOT_FOUND SESSION_CLOSED VARIABLE_NOT_FOUND VARIABLE_EXISTS
              CONSTRAINT_VIOLATION VERSION_CONFLICT INVALID_ARGUMENT LIMIT_EXCEEDED
              REVISION_OUT_OF_RANGE FILTER_TOO_COSTLY TOKEN_REQUIRED TOKEN_INVALID)
  @reason_atoms Map.new(@reasons, &{&1, &1 |> String.downcase() |> String.to_atom()})

  @error_info "google.rpc.ErrorInfo"

  @impl true
  def message(%__MODULE__{code: code, reason: nil, message: msg}), do: "#{code}: #{msg}"
  def message(%__MODULE__{code: code, reason: r, message: msg}), do: "#{code} (#{r}): #{msg}"

  @doc false
  # The error of a non-200 Connect response: its body is
  # {"code": ..., "message": ..., "details": [{"type", "value", "debug"}]}.
  def from_connect(status, body) do
    case VarBridge.JSON.decode(body) do
      {:ok, %{"code" => code} = e} -> from_map(code, e)
      _ -> %__MODULE__{code: code_of_status(status), message: "HTTP #{status}: #{body}"}
    end
  end

  @doc false
  # An error object as Connect writes it (also the data of an SSE error event).
  def from_map(code, e) do
    {reason, details} =
      e
      |> Map.get("details", [])
      |> Enum.find_value({nil, %{}}, &error_info/1)

    %__MODULE__{
      code: Map.get(@code_atoms, code, :unknown),
      reason: reason,
      message: Map.get(e, "message", ""),
      details: details
    }
  end

  @doc false
  def transport(reason) do
    %__MODULE__{code: :unavailable, message: "transport: #{inspect(reason)}"}
  end

  @doc false
  def local(code, reason, message, details \\ %{}) do
    %__MODULE__{code: code, reason: reason, message: message, details: details}
  end

  defp error_info(%{"type" => @error_info, "value" => value}) do
    with {:ok, bin} <- Base.decode64(value, padding: false),
         {:ok, %{reason: r, metadata: md}} <- decode_error_info(bin) do
      {Map.get(@reason_atoms, r, r), md}
    else
      _ -> nil
    end
  end

  defp error_info(_), do: nil

  # Connect's mapping of HTTP statuses for errors without a Connect body.
  defp code_of_status(400), do: :invalid_argument
  defp code_of_status(401), do: :unauthenticated
  defp code_of_status(403), do: :permission_denied
  defp code_of_status(404), do: :unimplemented
  defp code_of_status(408), do: :deadline_exceeded
  defp code_of_status(409), do: :aborted
  defp code_of_status(412), do: :failed_precondition
  defp code_of_status(413), do: :resource_exhausted
  defp code_of_status(415), do: :internal
  defp code_of_status(429), do: :unavailable
  defp code_of_status(431), do: :resource_exhausted
  defp code_of_status(s) when s in [502, 503, 504], do: :unavailable
  defp code_of_status(_), do: :unknown

  @doc false
  # google.rpc.ErrorInfo in protobuf's binary form: reason = 1, domain = 2,
  # map<string, string> metadata = 3 (entries of key = 1, value = 2).
  def decode_error_info(bin) do
    with {:ok, fields} <- fields(bin, []) do
      info =
        Enum.reduce(fields, %{reason: "", domain: "", metadata: %{}}, fn
          {1, r}, acc ->
            %{acc | reason: r}

          {2, d}, acc ->
            %{acc | domain: d}

          {3, entry}, acc ->
            case fields(entry, []) do
              {:ok, kv} ->
                m = Map.new(kv)
                put_in(acc, [:metadata, Map.get(m, 1, "")], Map.get(m, 2, ""))

              :error ->
                acc
            end

          _, acc ->
            acc
        end)

      {:ok, info}
    end
  end

  # The length-delimited fields of a message, in order; varint and fixed
  # fields are skipped.
  defp fields(<<>>, acc), do: {:ok, Enum.reverse(acc)}

  defp fields(bin, acc) do
    with {:ok, key, rest} <- varint(bin, 0, 0) do
      field = Bitwise.bsr(key, 3)

      case Bitwise.band(key, 7) do
        0 ->
          with {:ok, _, rest} <- varint(rest, 0, 0), do: fields(rest, acc)

        1 ->
          case rest do
            <<_::64, rest::binary>> -> fields(rest, acc)
            _ -> :error
          end

        2 ->
          with {:ok, len, rest} <- varint(rest, 0, 0) do
            case rest do
              <<v::binary-size(len), rest::binary>> -> fields(rest, [{field, v} | acc])
              _ -> :error
            end
          end

        5 ->
          case rest do
            <<_::32, rest::binary>> -> fields(rest, acc)
            _ -> :error
          end

        _ ->
          :error
      end
    end
  end

  defp varint(<<1::1, b::7, rest::binary>>, shift, acc) when shift < 64,
    do: varint(rest, shift + 7, acc + Bitwise.bsl(b, shift))

  defp varint(<<0::1, b::7, rest::binary>>, shift, acc),
    do: {:ok, acc + Bitwise.bsl(b, shift), rest}

  defp varint(_, _, _), do: :error
end
