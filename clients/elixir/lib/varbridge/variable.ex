defmodule VarBridge.Variable do
  @moduledoc """
  A typed, versioned value in a session, as the server returned it.

  `version` is 1 at registration and +1 per change; `revision` is the session
  revision of its last change; `source` is who last wrote it. Times are
  `DateTime`s (microsecond precision).
  """
  alias VarBridge.Value

  defstruct [
    :id,
    :name,
    :type,
    :value,
    :updated_at,
    :created_at,
    constraints: %{},
    metadata: %{},
    version: 0,
    revision: 0,
    source: ""
  ]

  @type t :: %__MODULE__{
          id: String.t(),
          name: String.t(),
          type: Value.type(),
          value: term(),
          constraints: map(),
          metadata: %{optional(String.t()) => String.t()},
          version: non_neg_integer(),
          revision: non_neg_integer(),
          source: String.t(),
          updated_at: DateTime.t() | nil,
          created_at: DateTime.t() | nil
        }

  @doc false
  # A Variable message in protobuf JSON.
  def from_wire(v) do
    %__MODULE__{
      id: Map.get(v, "id", ""),
      name: Map.get(v, "name", ""),
      type: Value.type_from_wire(v["type"]),
      value: Value.from_wire(v["value"]),
      constraints: Value.constraints_from_wire(v["constraints"]),
      metadata: Map.get(v, "metadata", %{}),
      version: Value.int(v["version"]),
      revision: Value.int(v["revision"]),
      source: Map.get(v, "source", ""),
      updated_at: time(v["updatedAt"]),
      created_at: time(v["createdAt"])
    }
  end

  @doc false
  def time(nil), do: nil

  def time(s) do
    case DateTime.from_iso8601(s) do
      {:ok, t, _} -> t
      _ -> nil
    end
  end
end

defmodule VarBridge.Session do
  @moduledoc """
  A session on a server: its `id`, the server's `url` (with the connection's
  `tls` options and call `timeout`), the `token` its calls send (nil without
  auth), and what the server said about it when it was initialized
  (`incarnation`, `revision`, `created`, `expires_at`).
  """
  defstruct [
    :url,
    :id,
    :token,
    :incarnation,
    :expires_at,
    revision: 0,
    created: false,
    tls: [],
    timeout: 15_000,
    profile: :varbridge
  ]

  @type t :: %__MODULE__{
          url: String.t(),
          tls: keyword(),
          timeout: pos_integer(),
          profile: atom(),
          id: String.t(),
          token: String.t() | nil,
          incarnation: String.t() | nil,
          expires_at: DateTime.t() | nil,
          revision: non_neg_integer(),
          created: boolean()
        }
end
