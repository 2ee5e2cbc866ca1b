//! The one config style of the crate: serde structs with `#[serde(default,
//! deny_unknown_fields)]` where every field has a default, `new` for the required fields and
//! `with_*` setters generated here.

/// Generates `with_<field>` setters: `setters!(Config { /// doc \n with_x: x: Type; ... })`.
macro_rules! setters {
    ($ty:ty { $($(#[$doc:meta])* $name:ident: $field:ident: $t:ty;)* }) => {
        impl $ty {
            $(
                $(#[$doc])*
                pub fn $name(mut self, value: $t) -> Self {
                    self.$field = value;
                    self
                }
            )*
        }
    };
}

pub(crate) use setters;
