defmodule VarBridge.Tensor do
  @moduledoc """
  An n-dimensional array: `shape` (a list of axis sizes), `dtype` (one of
  `"bool"`, `"int8"` ... `"uint64"`, `"float16"`, `"float32"`, `"float64"`)
  and `data`, the little-endian element bytes in row-major order.
  """
  defstruct shape: [], dtype: "float64", data: <<>>

  @type t :: %__MODULE__{shape: [non_neg_integer()], dtype: String.t(), data: binary()}
end

defmodule VarBridge.Value do
  @moduledoc """
  Values and types between Elixir terms and the wire.

  | type         | Elixir term                                   |
  | ------------ | --------------------------------------------- |
  | `:integer`   | integer                                       |
  | `:float`     | float, or `:nan`, `:infinity`, `:neg_infinity` |
  | `:string`, `:choice`, `:module` | binary (UTF-8)             |
  | `:boolean`   | `true` / `false`                              |
  | `:embedding` | list of floats                                |
  | `:tensor`    | `%VarBridge.Tensor{}`                         |

  Requests carry values as protobuf JSON (`{"floatValue": 0.7}`); watch
  events carry them as `varbridge watch -o json` prints them. Both are read
  by the variable's type, so a float that JSON wrote as `20` is `20.0` here.
  """

  alias VarBridge.Tensor

  @types [:integer, :float, :string, :boolean, :choice, :module, :embedding, :tensor]

  @typedoc "A variable's type."
  @type type ::
          :integer | :float | :string | :boolean | :choice | :module | :embedding | :tensor

  @doc "Every variable type."
  def types, do: @types

  @doc false
  def type_to_wire(type) when type in @types,
    do: "VARIABLE_TYPE_" <> String.upcase(Atom.to_string(type))

  @doc false
  def type_from_wire("VARIABLE_TYPE_" <> name), do: type_from_name(String.downcase(name))
  def type_from_wire(_), do: nil

  @doc false
  # The short names of `varbridge watch -o json`.
  for t <- @types do
    def type_from_name(unquote(Atom.to_string(t))), do: unquote(t)
  end

  def type_from_name(_), do: nil

  @doc """
  The wire form (protobuf JSON) of `term`. An integer written to a `:float`
  variable (`type`) is sent as a float; any other type mismatch is for the
  server to judge. Returns `:error` for a term no variable can hold.
  """
  @spec to_wire(term(), type() | nil) :: {:ok, map()} | :error
  def to_wire(n, :float) when is_integer(n), do: {:ok, %{"floatValue" => n * 1.0}}
  def to_wire(n, _) when is_integer(n), do: {:ok, %{"intValue" => Integer.to_string(n)}}
  def to_wire(x, _) when is_float(x), do: {:ok, %{"floatValue" => x}}

  def to_wire(x, _) when x in [:nan, :infinity, :neg_infinity],
    do: {:ok, %{"floatValue" => special(x)}}

  def to_wire(b, _) when is_boolean(b), do: {:ok, %{"boolValue" => b}}
  def to_wire(s, _) when is_binary(s), do: {:ok, %{"stringValue" => s}}

  def to_wire(l, _) when is_list(l) do
    if Enum.all?(l, &(is_number(&1) or &1 in [:nan, :infinity, :neg_infinity])) do
      {:ok, %{"embeddingValue" => %{"values" => Enum.map(l, &wire_float/1)}}}
    else
      :error
    end
  end

  def to_wire(%Tensor{shape: shape, dtype: dtype, data: data}, _)
      when is_list(shape) and is_binary(dtype) and is_binary(data) do
    {:ok,
     %{
       "tensorValue" => %{
         "shape" => Enum.map(shape, &Integer.to_string/1),
         "dtype" => dtype,
         "data" => Base.encode64(data)
       }
     }}
  end

  def to_wire(_, _), do: :error

  defp wire_float(n) when is_integer(n), do: n * 1.0
  defp wire_float(x) when is_float(x), do: x
  defp wire_float(a), do: special(a)

  defp special(:nan), do: "NaN"
  defp special(:infinity), do: "Infinity"
  defp special(:neg_infinity), do: "-Infinity"

  @doc false
  # A protobuf JSON Value.
  def from_wire(nil), do: nil
  def from_wire(%{"intValue" => n}), do: int(n)
  def from_wire(%{"floatValue" => x}), do: float(x)
  def from_wire(%{"stringValue" => s}), do: s
  def from_wire(%{"boolValue" => b}), do: b
  def from_wire(%{"embeddingValue" => e}), do: Enum.map(Map.get(e, "values", []), &float/1)

  def from_wire(%{"tensorValue" => t}) do
    %Tensor{
      shape: Enum.map(Map.get(t, "shape", []), &int/1),
      dtype: Map.get(t, "dtype", ""),
      data: Base.decode64!(Map.get(t, "data", ""), padding: false)
    }
  end

  def from_wire(%{}), do: nil

  @doc false
  # A value as `varbridge watch -o json` prints it, read by its type.
  def from_json(nil, _type), do: nil
  def from_json(x, :float), do: float(x)
  def from_json(l, :embedding) when is_list(l), do: Enum.map(l, &float/1)

  def from_json(%{"shape" => shape, "dtype" => dtype, "data" => data}, :tensor) do
    %Tensor{shape: shape, dtype: dtype, data: Base.decode64!(data, padding: false)}
  end

  def from_json(x, _type), do: x

  @doc false
  def int(n) when is_integer(n), do: n
  def int(s) when is_binary(s), do: String.to_integer(s)
  def int(nil), do: 0

  defp float(x) when is_float(x), do: x
  defp float(n) when is_integer(n), do: n * 1.0
  defp float("NaN"), do: :nan
  defp float("Infinity"), do: :infinity
  defp float("-Infinity"), do: :neg_infinity
  defp float(s) when is_binary(s), do: s |> Float.parse() |> elem(0)

  @constraint_fields %{
    min: "min",
    max: "max",
    min_length: "minLength",
    max_length: "maxLength",
    pattern: "pattern",
    choices: "choices",
    allowed_modules: "allowedModules",
    dimensions: "dimensions",
    shape: "shape",
    dtype: "dtype"
  }

  @doc false
  # Constraints (a map or keyword list with the wire's names as atoms) in
  # protobuf JSON; unknown names are an error, not silently dropped.
  def constraints_to_wire(c) do
    Enum.reduce_while(c, {:ok, %{}}, fn {k, v}, {:ok, acc} ->
      case Map.fetch(@constraint_fields, k) do
        {:ok, field} -> {:cont, {:ok, Map.put(acc, field, constraint_value(k, v))}}
        :error -> {:halt, {:error, k}}
      end
    end)
  end

  defp constraint_value(k, v) when k in [:min, :max], do: wire_float(v)

  defp constraint_value(k, v) when k in [:min_length, :max_length, :dimensions],
    do: Integer.to_string(v)

  defp constraint_value(:shape, v), do: Enum.map(v, &Integer.to_string/1)
  defp constraint_value(_, v), do: v

  @doc false
  def constraints_from_wire(nil), do: %{}

  def constraints_from_wire(c) do
    for {k, field} <- @constraint_fields, Map.has_key?(c, field), into: %{} do
      v = c[field]

      v =
        cond do
          k in [:min, :max] -> float(v)
          k in [:min_length, :max_length, :dimensions] -> int(v)
          k == :shape -> Enum.map(v, &int/1)
          true -> v
        end

      {k, v}
    end
  end
end
