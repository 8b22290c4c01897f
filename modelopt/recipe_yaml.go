package modelopt

import "fmt"

// ReadRecipeYAML reads a ModelOpt recipe YAML file.
func ReadRecipeYAML(path string) (*Recipe, error) {
	return nil, fmt.Errorf("%w: %s: YAML recipes are not supported yet", ErrRecipe, path)
}
